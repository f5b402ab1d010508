"""The internal-error guard: one object used as ``with`` and as a decorator."""

from __future__ import annotations

import uuid

import pytest

from glmtrace._internal.guard import internal_errors


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a user's program: internal errors are reported, not raised."""
    monkeypatch.delenv("GLMTRACE_STRICT", raising=False)


def _place() -> str:
    """A place never reported before: the guard remembers places for the process's life."""
    return f"test place {uuid.uuid4().hex}"


def _reports(caplog: pytest.LogCaptureFixture, where: str) -> list[str]:
    return [
        f"{r.getMessage()} {type(r.exc_info[1]).__name__}"  # type: ignore[index]
        for r in caplog.records
        if r.name == "glmtrace" and where in r.getMessage()
    ]


@pytest.mark.usefixtures("lenient")
def test_with_block_reports_and_code_after_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    """An error inside ``with`` is logged on the glmtrace logger; the caller goes on."""
    where, after = _place(), []
    with internal_errors(where):
        raise ValueError("bug")
    after.append("ran")
    assert after == ["ran"]
    assert _reports(caplog, where) == [
        f"glmtrace internal error in {where} (user code continues) ValueError"
    ]


@pytest.mark.usefixtures("lenient")
def test_decorated_function_returns_none_on_error(caplog: pytest.LogCaptureFixture) -> None:
    """The decorator returns the function's value, or None after reporting its error."""
    where = _place()

    @internal_errors(where)
    def half(n: int) -> float:
        """Halves n."""
        if n < 0:
            raise ArithmeticError(n)
        return n / 2

    assert (half(4), half(-1), half.__name__, half.__doc__) == (2.0, None, "half", "Halves n.")
    assert len(_reports(caplog, where)) == 1


@pytest.mark.usefixtures("lenient")
def test_reports_once_per_place_and_type(caplog: pytest.LogCaptureFixture) -> None:
    """The same error at the same place is logged once; a new type or place is logged again."""
    first, second = _place(), _place()
    for where, error in [
        (first, ValueError),
        (first, ValueError),
        (first, KeyError),
        (second, ValueError),
        (first, KeyError),
    ]:
        with internal_errors(where):
            raise error("again")
    assert [r.split()[-1] for r in _reports(caplog, first)] == ["ValueError", "KeyError"]
    assert [r.split()[-1] for r in _reports(caplog, second)] == ["ValueError"]


def test_strict_mode_reraises_the_error_itself() -> None:
    """Under GLMTRACE_STRICT=1 (this suite) both forms re-raise the very error raised."""
    error = ValueError("sdk bug")

    @internal_errors("strict decorator")
    def fail() -> None:
        raise error

    with pytest.raises(ValueError) as raised, internal_errors("strict block"):
        raise error
    assert raised.value is error
    with pytest.raises(ValueError) as raised:
        fail()
    assert raised.value is error


@pytest.mark.usefixtures("lenient")
@pytest.mark.parametrize("exit_", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_pass_through(
    exit_: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """KeyboardInterrupt, SystemExit and GeneratorExit are no internal errors: never swallowed."""
    where = _place()

    @internal_errors(where)
    def leave() -> None:
        raise exit_()

    with pytest.raises(exit_), internal_errors(where):
        raise exit_()
    with pytest.raises(exit_):
        leave()
    assert _reports(caplog, where) == []
