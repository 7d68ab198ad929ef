"""The public namespace: __all__ lists exactly the public names, and one error hierarchy."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import referralkit
import referralkit.errors
import referralkit.messages
import referralkit.testing
from referralkit import ReferralKitError


def public_names(module: types.ModuleType) -> set[str]:
    """Names in dir(module) that do not start with '_' and are not modules."""
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    }


def isort_key(name: str) -> tuple[int, str]:
    """The order of a curated __all__: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize(
    "module", [referralkit, referralkit.testing, referralkit.messages], ids=lambda m: m.__name__
)
class TestAll:
    def test_all_is_exactly_the_public_names(self, module: types.ModuleType) -> None:
        """__all__ equals the public, non-module names of dir(module)."""
        assert set(module.__all__) == public_names(module)

    def test_all_is_unique_and_sorted(self, module: types.ModuleType) -> None:
        """__all__ has no duplicates and is sorted (constants, classes, functions)."""
        assert len(module.__all__) == len(set(module.__all__))
        assert module.__all__ == sorted(module.__all__, key=isort_key)

    def test_every_name_resolves(self, module: types.ModuleType) -> None:
        """Every name in __all__ is an attribute of the module."""
        for name in module.__all__:
            assert getattr(module, name) is not None


class TestTopLevel:
    @pytest.mark.parametrize(
        "name",
        [
            "ReferralDesk",
            "Referral",
            "Patient",
            "Coverage",
            "Provider",
            "Actor",
            "Role",
            "Status",
            "ReferralLifecycle",
            "TABLE",
            "FHIR_TASK",
            "open_store",
            "MemoryStore",
            "Query",
            "ReferralKitError",
            "ValidationError",
            "from_dict",
            "to_dict",
            "replay",
        ],
    )
    def test_essentials_are_exported(self, name: str) -> None:
        """The names a user starts with are in referralkit.__all__."""
        assert name in referralkit.__all__

    def test_testing_exports_strategies_and_fakes(self) -> None:
        """referralkit.testing has the fake clock, the sample request and the strategies."""
        for name in ("FakeClock", "sample_request", "STRATEGIES", "referrals", "coverages"):
            assert name in referralkit.testing.__all__

    def test_version(self) -> None:
        """The package has a version string."""
        assert isinstance(referralkit.__version__, str)
        assert referralkit.__version__.count(".") >= 2


def all_modules() -> list[types.ModuleType]:
    modules = [referralkit]
    for info in pkgutil.walk_packages(referralkit.__path__, "referralkit."):
        if info.name.endswith("__main__"):
            continue  # running it is the command line
        modules.append(importlib.import_module(info.name))
    return modules


class TestErrorHierarchy:
    @pytest.mark.parametrize("name", referralkit.errors.__all__, ids=lambda name: name)
    def test_every_error_derives_from_the_root(self, name: str) -> None:
        """Every class in referralkit.errors derives from ReferralKitError."""
        assert issubclass(getattr(referralkit.errors, name), ReferralKitError)

    def test_no_exception_class_outside_the_hierarchy(self) -> None:
        """No module of the package defines an exception outside ReferralKitError."""
        strays = [
            f"{module.__name__}.{name}"
            for module in all_modules()
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == module.__name__
            and not issubclass(value, ReferralKitError)
        ]
        assert strays == []

    def test_errors_are_exported(self) -> None:
        """Every error class is importable from the top-level package."""
        assert set(referralkit.errors.__all__) <= set(referralkit.__all__)

    @pytest.mark.parametrize(
        ("error", "builtin"),
        [
            (referralkit.ValidationError, ValueError),
            (referralkit.NotFoundError, LookupError),
            (referralkit.GuardError, referralkit.TransitionError),
            (referralkit.DuplicateReferralError, referralkit.ConcurrencyError),
        ],
    )
    def test_subclass_relations(self, error: type, builtin: type) -> None:
        """The hierarchy drawn in the errors module docstring holds."""
        assert issubclass(error, builtin)

    def test_storage_error_keeps_driver_details(self) -> None:
        """StorageError keeps the driver's class name and SQL state, not its message."""
        error = referralkit.StorageError(
            "write failed", driver_error="IntegrityError", sqlstate="23505"
        )
        assert (error.driver_error, error.sqlstate) == ("IntegrityError", "23505")
        assert str(error) == "write failed"
