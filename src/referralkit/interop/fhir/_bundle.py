"""A Bundle's resources, and how references among them resolve: by fullUrl, by relative
``Type/id``, or to a resource contained in the one that holds the reference.

A Bundle where two entries answer to the same fullUrl or the same ``Type/id``, or where a
resource contains two resources with the same id, is refused: a reference to either would be
ambiguous, and reading the last one (or the first) would let an appended entry stand in for
the real one."""

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
                self._index(resource, entry.text("fullUrl"), entry)
        else:
            self._index(root, None)

    def _index(self, resource: _Node, full_url: str | None, entry: _Node | None = None) -> None:
        if resource.type is None:
            raise resource.error("resourceType", "required, missing")
        self.resources.append(resource)
        if full_url is not None and entry is not None:
            resource.full_url = full_url
            if full_url in self._by_key:
                raise entry.error("fullUrl", _AMBIGUOUS)
            self._by_key[full_url] = resource
        rid = resource.text("id")
        if rid is not None:
            key = f"{resource.type}/{rid}"
            if self._by_key.get(key, resource) is not resource:
                raise resource.error("id", _AMBIGUOUS)
            self._by_key[key] = resource
        contained_ids: set[str] = set()
        for contained in resource.objs("contained"):
            cid = contained.text("id")
            if cid is not None:
                if cid in contained_ids:
                    raise contained.error("id", "a second contained resource with this id")
                contained_ids.add(cid)

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


_AMBIGUOUS: Final = "a second entry answers to the same reference: references to it are ambiguous"

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
