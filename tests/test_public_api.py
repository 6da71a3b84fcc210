"""The public surface is exactly what __all__ says, and what the README promises."""

import ipybgfetch

CONTRACT = {
    "manager",
    "BackgroundFetchManager",
    "BackgroundFetchRegistration",
    "BackgroundFetchRecord",
    "RecordList",
    "Request",
    "Response",
    "FetchError",
    "AbortError",
    "InvalidStateError",
    "QuotaExceededError",
}


def test_all_is_exactly_the_public_names():
    public = {n for n in dir(ipybgfetch) if not n.startswith("_")}
    # submodules imported as attributes (testing) are not names of the API
    public -= {"testing"}
    assert public == set(ipybgfetch.__all__) - {"__version__"}


def test_contract_names_are_exported():
    assert set(ipybgfetch.__all__) >= CONTRACT


def test_errors_subclass_what_the_spec_throws():
    assert issubclass(ipybgfetch.FetchError, TypeError)
    for name in ("AbortError", "InvalidStateError", "QuotaExceededError", "FetchError"):
        assert issubclass(getattr(ipybgfetch, name), ipybgfetch.BackgroundFetchError)


def test_package_ships_py_typed():
    from importlib.resources import files

    assert files("ipybgfetch").joinpath("py.typed").is_file()
