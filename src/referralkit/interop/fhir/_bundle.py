"""A Bundle's resources, and how references among them resolve: by fullUrl, by relative
``Type/id``, or to a resource contained in the one that holds the reference."""

from __future__ import annotations

from typing import Final

from ._json import _Node


class _Bundle:
    """The resources of one Bundle, and how references among them resolve."""

    def __init__(self, root: _Node) -> None:
        self.resources: list[_Node] = []
        self._by_key: dict[str, _Node] = {}
        if root.type == "Bundle":
            for entry in root.objs("entry"):
                resource = entry.obj("resource")
                if resource is None:
                    continue
                self._index(resource, entry.text("fullUrl"))
        else:
            self._index(root, None)

    def _index(self, resource: _Node, full_url: str | None) -> None:
        if resource.type is None:
            raise resource.error("resourceType", "required, missing")
        self.resources.append(resource)
        if full_url is not None:
            self._by_key[full_url] = resource
        rid = resource.text("id")
        if rid is not None:
            self._by_key.setdefault(f"{resource.type}/{rid}", resource)

    def of_type(self, kind: str) -> list[_Node]:
        return [r for r in self.resources if r.type == kind]

    def resolve(
        self, ref: _Node | None, holder: _Node, kinds: tuple[str, ...], *, strict: bool = True
    ) -> _Node | None:
        """The resource ``ref`` points to (in the Bundle, or contained in ``holder`` or in the
        resource that contains ``holder``), if any.

        A resource of another type than ``kinds`` is refused, or with ``strict=False`` taken
        as no match.
        """
        if ref is None:
            return None
        target = ref.text("reference")
        if target is None:
            return None
        found: _Node | None = None
        if target.startswith("#"):
            host = holder.container or holder
            for contained in host.objs("contained"):
                if contained.text("id") == target[1:]:
                    contained.container = host
                    found = contained
                    break
        else:
            found = self._by_key.get(target.split("/_history/")[0])
        if found is not None and found.type not in kinds:
            if not strict:
                return None
            raise ref.error("reference", f"expected a reference to a {' or '.join(kinds)}")
        return found


_PARTIES: Final = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "RelatedPerson",
    "Group",
    "CareTeam",
    "HealthcareService",
    "Device",
)
