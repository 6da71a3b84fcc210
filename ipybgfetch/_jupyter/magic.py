"""The ``%bgfetch`` line magic and ``%%bgfetch`` cell magic (an IPython extension).

Load it with ``%load_ext ipybgfetch``. Parsing is done by pure functions
(:func:`parse_line`, :func:`parse_cell`, :func:`parse_cell_body`) that return a
:class:`Command`; :class:`BgFetchMagics` only runs commands against the public API
(``ipybgfetch.manager()``), so the parser is testable without the engine.

Every mistake in the arguments becomes an IPython :class:`~IPython.core.error.UsageError`
that says what was wrong and shows a correct example: never a ``SystemExit`` from argparse
and never a traceback from inside the package.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from .._sizes import format_size, parse_size

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


__all__ = [
    "VERBS",
    "BgFetchMagics",
    "Command",
    "RegistrationList",
    "RequestSpec",
    "load_ipython_extension",
    "parse_cell",
    "parse_cell_body",
    "parse_line",
    "unload_ipython_extension",
]

#: The magic's name: ``%bgfetch`` and ``%%bgfetch``.
MAGIC_NAME = "bgfetch"

#: Verbs that take exactly one registration id.
ID_VERBS = ("get", "abort", "pause", "resume", "wait", "retry", "delete")
#: Every verb. An id equal to one of these needs the explicit ``fetch`` verb.
VERBS = ("list", "fetch", *ID_VERBS)

EXAMPLE_FETCH = '%bgfetch my-data https://example.org/a.csv --title "My data" --download-total 2GB'
EXAMPLE_CELL = (
    '%%bgfetch my-data --title "My data"\n'
    "https://example.org/a.csv  sha256-<base64 digest>\n"
    "https://example.org/b.parquet"
)
EXAMPLE_HEADER = '-H "Authorization: Bearer <token>"'


def _examples(*examples: str) -> str:
    return "Example:\n    " + "\n    ".join("\n    ".join(e.splitlines()) for e in examples)


def _usage_error(reason: str, *examples: str) -> UsageError:
    reason = reason.strip()
    if not reason.endswith((".", "?", "!")):
        reason += "."
    return UsageError(f"%{MAGIC_NAME}: {reason}\n{_examples(*(examples or (EXAMPLE_FETCH,)))}")


# --- the parsed form ---------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSpec:
    """One request as written in the magic: a URL and an optional integrity value."""

    url: str
    integrity: str | None = None


@dataclass(frozen=True)
class Command:
    """What a ``%bgfetch`` line (and, for ``%%bgfetch``, its cell) asks for.

    ``verb`` is ``"manager"`` (bare ``%bgfetch``), ``"help"`` (``--help``), ``"list"``,
    ``"fetch"`` or one of :data:`ID_VERBS`.
    """

    verb: str
    id: str | None = None
    requests: tuple[RequestSpec, ...] = ()
    title: str | None = None
    icons: tuple[str, ...] = ()
    download_total: int | None = None
    dest: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    silent: bool = False
    force: bool = False
    checksum: bool = False
    all: bool = False
    segments: int | None = None
    min_segment_size: int | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in self.requests)

    def fetch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``manager.fetch()``: only the options that were given."""
        kwargs: dict[str, Any] = {}
        if self.title is not None:
            kwargs["title"] = self.title
        if self.icons:
            kwargs["icons"] = [{"src": src} for src in self.icons]
        if self.download_total is not None:
            kwargs["download_total"] = self.download_total
        if self.dest is not None:
            kwargs["dest"] = self.dest
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if self.force:
            kwargs["force"] = True
        if self.checksum:
            kwargs["checksum"] = True
        if self.segments is not None:
            kwargs["segments"] = self.segments
        if self.min_segment_size is not None:
            kwargs["min_segment_size"] = self.min_segment_size
        return kwargs


# --- parsing -----------------------------------------------------------------------------


class _ArgumentError(Exception):
    """Raised instead of argparse's print-and-exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _ArgumentError(message or f"exit {status}")


def _fetch_parser() -> _Parser:
    parser = _Parser(prog=f"%{MAGIC_NAME}", add_help=False, allow_abbrev=False)
    parser.add_argument("id", nargs="?")
    parser.add_argument("urls", nargs="*")
    parser.add_argument("--title")
    parser.add_argument("--icon", action="append", dest="icons", default=[])
    parser.add_argument("--download-total", dest="download_total")
    parser.add_argument("--dest")
    parser.add_argument("-H", "--header", action="append", dest="headers", default=[])
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--checksum", action="store_true")
    parser.add_argument("--segments")
    parser.add_argument("--min-segment-size", dest="min_segment_size")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


_SIZE_OPTIONS = ("--download-total", "--min-segment-size")  # take a size: "60 MB" too


def _join_sizes(tokens: list[str]) -> list[str]:
    """``--download-total 60 MB`` (unquoted): the unit after a number joins the number."""
    from .._sizes import UNITS

    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        out.append(token)
        i += 1
        if token in _SIZE_OPTIONS and i + 1 < len(tokens):
            number, unit = tokens[i], tokens[i + 1]
            if re.fullmatch(r"[0-9.]+", number) and unit.lower() in UNITS and unit:
                out.append(f"{number} {unit}")
                i += 2
        elif (
            token.split("=", 1)[0] in _SIZE_OPTIONS
            and "=" in token
            and i < len(tokens)
            and re.fullmatch(r"[0-9.]+", token.split("=", 1)[1])
            and tokens[i]
            and tokens[i].lower() in UNITS
        ):
            out[-1] = f"{token} {tokens[i]}"
            i += 1
    return out


def _wait_parser() -> _Parser:
    parser = _Parser(prog=f"%{MAGIC_NAME} wait", add_help=False, allow_abbrev=False)
    parser.add_argument("id", nargs="?")
    parser.add_argument("--timeout")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def _split(line: str) -> list[str]:
    """Split like a shell, but keep backslashes literal (Windows paths, odd URLs)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    lexer.commenters = ""  # '#' starts a URL fragment, not a comment
    try:
        return list(lexer)
    except ValueError as exc:  # "No closing quotation"
        raise _usage_error(
            f"could not split the arguments ({exc}); close every quote you open",
            EXAMPLE_FETCH,
        ) from None


def _strip_silencer(line: str) -> tuple[str, bool]:
    """A trailing ``;`` (outside quotes) silences the result, as in IPython."""
    stripped = line.rstrip()
    if stripped.endswith(";"):
        return stripped[:-1], True
    return line, False


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise _usage_error(
            f"a header must be written as 'Name: value', got {text!r}",
            f"%{MAGIC_NAME} my-data https://example.org/a.csv {EXAMPLE_HEADER}",
        )
    return name, value.strip()


def _parse_download_total(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise _usage_error(
            f"--download-total: {exc}",
            f"%{MAGIC_NAME} my-data https://example.org/a.csv --download-total 60MB",
        ) from None


def _looks_like_url(text: str) -> bool:
    return "://" in text


def _check_id(reg_id: str, verb: str) -> None:
    if _looks_like_url(reg_id):
        if verb == "fetch":
            raise _usage_error(
                f"the first argument is the registration id, not a URL (got {reg_id!r}); "
                "name the download first",
                EXAMPLE_FETCH,
            )
        raise _usage_error(
            f"{verb} takes a registration id, not a URL (got {reg_id!r})",
            f"%{MAGIC_NAME} {verb} my-data",
        )


def _parse_fetch_args(tokens: list[str], *, explicit_verb: bool, in_cell: bool) -> Command:
    prefix = f"%{MAGIC_NAME} fetch " if explicit_verb else f"%{MAGIC_NAME} "
    if in_cell:
        prefix = "%" + prefix
    try:
        ns, extra = _fetch_parser().parse_known_intermixed_args(_join_sizes(tokens))
    except _ArgumentError as exc:
        raise _usage_error(str(exc), _fetch_example(explicit_verb, in_cell)) from None
    if ns.help:
        return Command(verb="help")
    if extra:
        options = [t for t in extra if t.startswith("-")] or extra
        known = [
            "--title",
            "--icon",
            "--download-total",
            "--dest",
            "-H",
            "--header",
            "--force",
            "--checksum",
            "--segments",
            "--min-segment-size",
        ]
        hints = []
        for option in options:
            close = difflib.get_close_matches(option.split("=", 1)[0], known, n=1)
            if close:
                hints.append(f"did you mean {close[0]} instead of {option}?")
        raise _usage_error(
            f"unknown option {' '.join(options)} (the options are --title, --icon, "
            f"--download-total, --dest, -H/--header, --force, --checksum, --segments, "
            f"--min-segment-size)"
            f"{'; ' + ' '.join(hints) if hints else ''}",
            _fetch_example(explicit_verb, in_cell),
        )
    if ns.id is None:
        raise _usage_error(
            "give an id for the registration, then the URLs",
            _fetch_example(explicit_verb, in_cell),
        )
    _check_id(ns.id, "fetch")
    if not ns.id.strip():
        raise _usage_error("the registration id must not be empty", _fetch_example(False, False))
    headers = tuple(_parse_header(h) for h in ns.headers)
    download_total = None
    if ns.download_total is not None:
        download_total = _parse_download_total(ns.download_total)
    dest = os.path.expanduser(ns.dest) if ns.dest is not None else None
    segments = None
    if ns.segments is not None:
        if not re.fullmatch(r"[0-9]+", ns.segments) or int(ns.segments) < 1:
            raise _usage_error(
                f"--segments takes a number of connections per file, 1 or more "
                f"(1 = never split), got {ns.segments!r}",
                f"%{MAGIC_NAME} my-data https://example.org/big.parquet --segments 16",
            )
        segments = int(ns.segments)
    min_segment_size = None
    if ns.min_segment_size is not None:
        try:
            min_segment_size = parse_size(ns.min_segment_size)
        except ValueError as exc:
            raise _usage_error(
                f"--min-segment-size: {exc}",
                f"%{MAGIC_NAME} my-data https://example.org/big.parquet --min-segment-size 16MiB",
            ) from None
    return Command(
        verb="fetch",
        id=ns.id,
        requests=tuple(RequestSpec(url) for url in ns.urls),
        title=ns.title,
        icons=tuple(ns.icons),
        download_total=download_total,
        dest=dest,
        headers=headers,
        force=ns.force,
        checksum=ns.checksum,
        segments=segments,
        min_segment_size=min_segment_size,
    )


def _fetch_example(explicit_verb: bool, in_cell: bool) -> str:
    if in_cell:
        return EXAMPLE_CELL
    if explicit_verb:
        return f"%{MAGIC_NAME} fetch list https://example.org/a.csv  # the id 'list' is a verb"
    return EXAMPLE_FETCH


def _parse_id_verb(verb: str, rest: list[str]) -> Command:
    example = f"%{MAGIC_NAME} {verb} my-data"
    timeout: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delete_all = False
    positional: list[str] = []
    if verb == "wait":
        example = f"%{MAGIC_NAME} wait my-data --timeout 60"
        try:
            ns, extra = _wait_parser().parse_known_args(rest)
        except _ArgumentError as exc:
            raise _usage_error(str(exc), example) from None
        if ns.help:
            return Command(verb="help")
        if ns.timeout is not None:
            try:
                timeout = float(ns.timeout)
            except ValueError:
                timeout = -1.0
            if not timeout >= 0 or timeout == float("inf"):
                raise _usage_error(
                    f"--timeout must be a number of seconds >= 0, got {ns.timeout!r}", example
                )
        positional = [ns.id, *extra] if ns.id is not None else extra
        delete_all = ns.all  # wait for every active registration
    else:
        if any(t in ("-h", "--help") for t in rest):
            return Command(verb="help")
        tokens = iter(rest)
        for token in tokens:
            if verb == "resume" and token in ("-H", "--header"):
                value = next(tokens, None)
                if value is None:
                    raise _usage_error(
                        f"{token} needs a value", f"%{MAGIC_NAME} resume my-data {EXAMPLE_HEADER}"
                    )
                headers += (_parse_header(value),)
            elif verb == "resume" and token.startswith("--header="):
                headers += (_parse_header(token.split("=", 1)[1]),)
            elif verb == "delete" and token == "--all":
                delete_all = True
            else:
                positional.append(token)
    options = [t for t in positional if t.startswith("-")]
    if options:
        allowed = {"resume": " (resume takes -H/--header)", "delete": " (delete takes --all)"}
        raise _usage_error(f"{verb} takes no option {options[0]!r}{allowed.get(verb, '')}", example)
    if not positional:
        if verb == "wait" and delete_all:  # every active registration
            return Command(verb=verb, timeout=timeout, all=True)
        raise _usage_error(f"{verb} needs the id of a registration", example)
    if len(positional) > 1:
        hint = ""
        if any(_looks_like_url(t) for t in positional[1:]):
            hint = (
                f"; to start a download whose id is {positional[0]!r}... use the fetch verb: "
                f"%{MAGIC_NAME} fetch {verb} URL"
            )
        raise _usage_error(
            f"{verb} takes exactly one registration id, got {len(positional)} arguments{hint}",
            example,
        )
    _check_id(positional[0], verb)
    return Command(verb=verb, id=positional[0], timeout=timeout, headers=headers, all=delete_all)


def _did_you_mean(first: str, rest: list[str]) -> None:
    """``%bgfetch lst`` or ``%bgfetch abrot my-data``: a misspelt verb, not an id."""
    if _looks_like_url(first) or any(_looks_like_url(t) for t in rest):
        return
    if first.startswith("-"):
        return
    close = difflib.get_close_matches(first.lower(), VERBS, n=1, cutoff=0.6)
    if not close:
        return
    verb = close[0]
    usage = f"%{MAGIC_NAME} {verb}" + ("" if verb == "list" else " ID")
    raise _usage_error(
        f"unknown command {first!r}; did you mean {verb!r} ({usage})? To start a download "
        f"with the id {first!r}, give its URLs",
        f"{usage.replace(' ID', ' my-data')}",
        f"%{MAGIC_NAME} {first} https://example.org/a.csv",
    )


def parse_line(line: str) -> Command:
    """Parse the arguments of the ``%bgfetch`` line magic into a :class:`Command`.

    >>> parse_line('my-data https://example.org/a.csv --title "My data" --download-total 2GB')
    ... # doctest: +ELLIPSIS
    Command(verb='fetch', id='my-data', requests=(RequestSpec(url='https://...
    >>> parse_line("wait my-data").verb
    'wait'

    Raises :class:`~IPython.core.error.UsageError` (reason + example) for bad arguments.
    """
    line, silent = _strip_silencer(line)
    command = _parse_tokens(_split(line), in_cell=False)
    if command.verb == "fetch" and not command.requests:
        raise _usage_error(
            f"give at least one URL to download for {command.id!r} "
            f"(or use the cell magic %%{MAGIC_NAME} with one URL a line)",
            EXAMPLE_FETCH,
            EXAMPLE_CELL,
        )
    return _with_silent(command, silent)


def _with_silent(command: Command, silent: bool) -> Command:
    if not silent:
        return command
    return replace(command, silent=True)


def _parse_tokens(tokens: list[str], *, in_cell: bool) -> Command:
    if not tokens:
        if in_cell:
            raise _usage_error("the first line needs the id of the registration", EXAMPLE_CELL)
        return Command(verb="manager")
    first, rest = tokens[0], tokens[1:]
    if first in ("-h", "--help", "help") and not rest:
        return Command(verb="help")
    if in_cell:
        if first == "fetch":
            return _parse_fetch_args(rest, explicit_verb=True, in_cell=True)
        if first in VERBS:
            raise _usage_error(
                f"the cell magic only starts downloads; {first!r} is a verb, so for a "
                f"registration with that id write %%{MAGIC_NAME} fetch {first} on the first "
                f"line, and for the {first} command use the line magic "
                f"%{MAGIC_NAME} {first}{'' if first == 'list' else ' ID'}",
                EXAMPLE_CELL,
            )
        return _parse_fetch_args(tokens, explicit_verb=False, in_cell=True)
    if first == "list":
        if rest:
            raise _usage_error(
                f"list takes no arguments (got {' '.join(rest)!r}); to fetch into a "
                "registration with the id 'list', use the fetch verb",
                f"%{MAGIC_NAME} list",
                f"%{MAGIC_NAME} fetch list https://example.org/a.csv",
            )
        return Command(verb="list")
    if first == "fetch":
        return _parse_fetch_args(rest, explicit_verb=True, in_cell=False)
    if first in ID_VERBS:
        return _parse_id_verb(first, rest)
    _did_you_mean(first, rest)
    return _parse_fetch_args(tokens, explicit_verb=False, in_cell=False)


_COMMENT_RE = re.compile(r"\s#")


def parse_cell_body(cell: str) -> tuple[RequestSpec, ...]:
    """The requests of a ``%%bgfetch`` cell: ``URL [integrity tokens...]`` one a line.

    Blank lines and lines starting with ``#`` are ignored, as is a `` # comment`` after
    the URL (a ``#`` right inside a URL is its fragment and is kept).

    >>> parse_cell_body("https://example.org/a.csv sha256-abc=\\n# comment\\n\\nhttps://x.org/b")
    (RequestSpec(url='https://example.org/a.csv', integrity='sha256-abc='), \
RequestSpec(url='https://x.org/b', integrity=None))
    """
    specs: list[RequestSpec] = []
    for number, raw in enumerate(cell.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        comment = _COMMENT_RE.search(line)
        if comment is not None:
            line = line[: comment.start()].rstrip()
        url, *tokens = line.split()
        if not _looks_like_url(url):
            raise _usage_error(
                f"line {number} of the cell should start with a URL, got {url!r} "
                "(one URL a line, optionally followed by its integrity)",
                EXAMPLE_CELL,
            )
        specs.append(RequestSpec(url, " ".join(tokens) if tokens else None))
    return tuple(specs)


def parse_cell(line: str, cell: str) -> Command:
    """Parse a ``%%bgfetch`` cell: options on the first line, one URL a line below.

    URLs given on the first line come first, then those of the body.
    """
    line, silent = _strip_silencer(line)
    command = _parse_tokens(_split(line), in_cell=True)
    if command.verb == "help":
        return command
    requests = command.requests + parse_cell_body(cell)
    if not requests:
        raise _usage_error(
            f"the cell has no URL to download for {command.id!r}; write one URL a line",
            EXAMPLE_CELL,
        )
    return _with_silent(replace(command, requests=requests), silent)


# --- output ------------------------------------------------------------------------------


def _status(reg: Any) -> str:
    state = getattr(reg, "state", None)
    if not isinstance(state, str) or not state:
        state = getattr(reg, "result", "") or "active"
    if state == "failure":
        reason = getattr(reg, "failure_reason", "") or ""
        return f"failure ({reason})" if reason else "failure"
    return str(state)


def _progress(reg: Any) -> str:
    done = int(getattr(reg, "downloaded", 0) or 0)
    total = getattr(reg, "expected_bytes", None) or 0  # the announced sizes, when known
    total = total or int(getattr(reg, "download_total", 0) or 0)  # else the limit
    if total:
        return f"{format_size(done)} / {format_size(total)} ({100 * done / total:.0f}%)"
    return format_size(done)


class RegistrationList(list):  # type: ignore[type-arg]
    """The registrations ``%bgfetch list`` returns: a plain list that displays as a table."""

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                str(getattr(reg, "id", "?")),
                _status(reg),
                _progress(reg),
                str(getattr(reg, "title", "") or ""),
            )
            for reg in self
        ]

    def __repr__(self) -> str:
        if not self:
            return "No background fetch registrations."
        header = ("id", "status", "downloaded", "title")
        rows = [header, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        if not self:
            return "<p>No background fetch registrations.</p>"
        head = "".join(f"<th>{h}</th>" for h in ("id", "status", "downloaded", "title"))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self._rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- running -----------------------------------------------------------------------------


def _api_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError]
    try:
        from .._exceptions import BackgroundFetchError
    except ImportError:  # pragma: no cover
        pass
    else:
        errors.append(BackgroundFetchError)
    return tuple(errors)


def _manager() -> Any:
    import ipybgfetch

    return ipybgfetch.manager()


def _find(mgr: Any, reg_id: str, verb: str) -> Any:
    """The registration with this id: the active one, else the newest settled one."""
    reg = mgr.get(reg_id)
    if reg is not None:
        return reg
    matches = [r for r in mgr.registrations() if getattr(r, "id", None) == reg_id]
    if matches:
        return matches[-1]
    known = [str(getattr(r, "id", "?")) for r in mgr.registrations()]
    listing = ", ".join(repr(k) for k in dict.fromkeys(known)) or "none yet"
    raise _usage_error(
        f"no registration with the id {reg_id!r} (known ids: {listing})",
        f"%{MAGIC_NAME} list",
        f"%{MAGIC_NAME} {verb} my-data",
    )


def _request_class() -> Any:
    import ipybgfetch

    return ipybgfetch.Request


def _build_requests(command: Command) -> list[Any]:
    """A plain URL, or an ``ipybgfetch.Request`` when the line gave an integrity value."""
    request = _request_class()
    return [
        request(spec.url, integrity=spec.integrity) if spec.integrity else spec.url
        for spec in command.requests
    ]


def run_command(command: Command) -> Any:
    """Run a parsed command against ``ipybgfetch.manager()`` and return what to display.

    API errors (``FetchError``, ``QuotaExceededError``, ``InvalidStateError``, ``ValueError``)
    become a :class:`~IPython.core.error.UsageError` carrying their message, reworded in
    the magic's terms (``%bgfetch abort ID`` rather than ``reg.abort()``).

    A trailing ``;`` only keeps IPython from displaying the value: ``reg = %bgfetch ...;``
    still binds the registration.
    """
    if command.verb == "help":
        print(_HELP)
        return None
    try:
        return _run(command)
    except UsageError:
        raise
    except KeyError as exc:  # e.g. delete() of an id that vanished meanwhile
        message = str(exc.args[0] if exc.args else exc)
        raise UsageError(f"%{MAGIC_NAME}: {magic_words(message, command)}") from None
    except _api_errors() as exc:
        raise UsageError(f"%{MAGIC_NAME}: {magic_words(str(exc), command)}") from None


#: Python-API phrases in error messages, and what the magic's user types instead.
_MAGIC_WORDS: tuple[tuple[str, str], ...] = (
    (r"abort it \(mgr\.get\([^)]*\)\.abort\(\)\)", "abort it (%bgfetch abort {id})"),
    (r"mgr\.get\([^)]*\)\.abort\(\)", "%bgfetch abort {id}"),
    (r"\babort\(\) it \(from here", "abort it (%bgfetch abort {id}, from here"),
    (
        r"reg\.resume\(headers=\{'Authorization': \.\.\.\}\) or reg\.resume\(auth=\.\.\.\)",
        '%bgfetch resume {id} -H "Authorization: ..."',
    ),
    (r"reg\.resume\(headers=[^)]*\)", '%bgfetch resume {id} -H "Name: value"'),
    (r"\breg\.(pause|resume|abort|retry|wait)\(\)", r"%bgfetch \1 {id}"),
    (r"see mgr\.registrations\(\)", "see %bgfetch list"),
    (r"mgr\.delete\([^)]*all=True\)", "%bgfetch delete {id} --all"),
    (r"\bforce=True\b", "--force"),
    (r"pass dest= a folder", "pass --dest a folder"),
    (r"pick another dest\b", "pick another --dest"),
    (r"\bdest=", "--dest "),
)


def magic_words(message: str, command: Command) -> str:
    """An API error message in the magic's terms (see :data:`_MAGIC_WORDS`)."""
    reg_id = command.id or "ID"

    def header_options(match: re.Match[str]) -> str:
        names = re.findall(r"'([^']+)': \.\.\.", match.group(1))
        options = " ".join(f'-H "{name}: ..."' for name in names)
        return f"%{MAGIC_NAME} resume {reg_id} {options}"

    if "auth=" not in message:  # headers by name: one -H each
        message = re.sub(
            r"reg\.resume\(headers=\{((?:'[^']+': \.\.\.(?:, )?)+)\}\)", header_options, message
        )
    for pattern, replacement in _MAGIC_WORDS:
        message = re.sub(pattern, replacement.replace("{id}", reg_id), message)
    return message


def _one_line(reg: Any) -> str:
    return f"{getattr(reg, 'id', '?')!r}: {_status(reg)}, {_progress(reg)}"


def _run(command: Command) -> Any:
    mgr = _manager()
    if command.verb == "manager":
        return mgr
    if command.verb == "list":
        return RegistrationList(_current_registrations(mgr))
    if command.verb == "fetch":
        assert command.id is not None
        active = mgr.get(command.id)
        if active is not None:
            raise _usage_error(
                f"a registration with id {command.id!r} is already active ({_status(active)}); "
                f"wait for it (%{MAGIC_NAME} wait {command.id}), abort it "
                f"(%{MAGIC_NAME} abort {command.id}) or pick another id",
                f"%{MAGIC_NAME} wait {command.id}",
            )
        return mgr.fetch(command.id, _build_requests(command), **command.fetch_kwargs())
    if command.verb == "wait" and command.all:
        return _wait_all(mgr, command)
    assert command.id is not None
    if command.verb == "delete":
        target = _find(mgr, command.id, "delete")
        if not getattr(target, "settled", getattr(target, "state", "") != "active"):
            raise _usage_error(
                f"registration {command.id!r} is still {_status(target)}; abort it first "
                f"(%{MAGIC_NAME} abort {command.id}), then delete it",
                f"%{MAGIC_NAME} abort {command.id}",
            )
        if command.all:
            n = mgr.delete(command.id, all=True)
            plural = "s" if n != 1 else ""
            print(f"Deleted {n} registration{plural} {command.id!r} with their records and files.")
            return None
        described = _describe_deleted(target, command.id)
        files = _files_of(target)
        mgr.delete(command.id)
        kept = [f for f in files if os.path.exists(f)]
        if kept:
            print(
                f"Deleted the registration {described} with its records; {len(kept)} of its "
                f"{len(files)} files stay, as an older registration with this id lists "
                f"them too: {', '.join(os.path.basename(f) for f in kept[:3])}"
                f"{'...' if len(kept) > 3 else ''}."
            )
        else:
            print(f"Deleted the registration {described} with its records and files.")
        left = [r for r in mgr.registrations() if getattr(r, "id", None) == command.id]
        if left:
            n = len(left)
            print(
                f"{n} older registration{'s' if n != 1 else ''} with this id "
                f"remain{'s' if n == 1 else ''}: %{MAGIC_NAME} delete {command.id} removes the "
                f"next, %{MAGIC_NAME} delete {command.id} --all every one."
            )
        return None
    reg = _find(mgr, command.id, command.verb)
    if command.verb == "get":
        return reg
    if command.verb == "abort":
        if reg.abort():
            print(f"Aborted {_one_line(reg)}.")
        else:
            print(f"{command.id!r} was not active ({_status(reg)}); nothing to abort.")
        return reg
    if command.verb == "pause":
        if reg.pause():
            print(f"Paused {_one_line(reg)}; %{MAGIC_NAME} resume {command.id} continues it.")
        else:
            print(f"{command.id!r} was not downloading ({_status(reg)}); nothing to pause.")
        return reg
    if command.verb == "resume":
        resumed = reg.resume(headers=dict(command.headers)) if command.headers else reg.resume()
        if resumed:
            print(f"Resumed {_one_line(reg)}.")
        else:
            print(f"{command.id!r} was not paused ({_status(reg)}); nothing to resume.")
        return reg
    if command.verb == "retry":
        n = reg.retry()
        if n:
            print(f"Retrying {n} failed record{'s' if n != 1 else ''} of {command.id!r}.")
        else:
            print(f"{command.id!r} has no failed record to retry ({_status(reg)}).")
        return reg
    if command.verb == "wait":
        _wait_for([reg], command)
        print(f"Done: {_one_line(reg)}.")
        return reg
    raise AssertionError(f"unhandled verb {command.verb!r}")  # pragma: no cover


def _files_of(reg: Any) -> list[str]:
    """The paths of a registration's files (through the public record API)."""
    paths = []
    try:
        records = list(reg.match_all())
    except Exception:  # no records (any more), or not a registration
        return []
    for record in records:
        try:
            path = record.response.path if record.response is not None else None
        except Exception:  # no body on disk
            path = None
        if path is not None:
            paths.append(str(path))
    return paths


def _current_registrations(mgr: Any) -> list[Any]:
    """The registrations, without those a newer one with the same id replaced."""
    try:
        return list(mgr.registrations(replaced=False))
    except TypeError:  # a manager without the keyword
        return list(mgr.registrations())


def _describe_deleted(reg: Any, reg_id: str) -> str:
    import datetime

    created = getattr(reg, "created", None)
    when = ""
    if isinstance(created, (int, float)):
        when = datetime.datetime.fromtimestamp(created).strftime(" started %Y-%m-%d %H:%M")
    records = getattr(reg, "records_total", None)
    count = f", {records} records" if isinstance(records, int) else ""
    return f"{reg_id!r} ({_status(reg)}{when}{count}, {_progress(reg)})"


def _wait_all(mgr: Any, command: Command) -> None:
    active = [r for r in mgr.registrations() if not getattr(r, "settled", False)]
    if not active:
        print("No active registration to wait for.")
        return None
    _wait_for(active, command)
    for reg in active:
        print(f"Done: {_one_line(reg)}.")
    return None


def _wait_for(regs: list[Any], command: Command) -> None:
    from .._console import wait_with_progress

    label = command.id if command.id is not None else ""
    try:
        if len(regs) == 1:  # reg.wait() draws its own progress line on a terminal
            regs[0].wait(timeout=command.timeout) if command.timeout is not None else regs[0].wait()
        else:
            wait_with_progress(regs, timeout=command.timeout)
    except KeyboardInterrupt:  # one line, not a traceback: only the waiting stopped
        raise UsageError(
            f"stopped waiting; {label or 'the downloads'!r} keeps downloading in the "
            f"background (%{MAGIC_NAME} abort {label or 'ID'} stops it)"
        ) from None
    except TimeoutError as exc:
        said = str(exc).replace("abort() it", f"abort it (%{MAGIC_NAME} abort {label or 'ID'})")
        raise UsageError(
            f"{said}\nThe download continues in the background; wait again, e.g. "
            f"%{MAGIC_NAME} wait {label or '--all'} --timeout 600"
        ) from None


# --- the IPython side --------------------------------------------------------------------

_HELP = """\
%bgfetch: download in the background of the kernel (the web's Background Fetch API).

Start a registration (returns it; the last line of a cell shows its panel):

    %bgfetch my-data https://example.org/a.csv https://example.org/b.parquet
    %bgfetch my-data https://example.org/a.csv --title "My data" --download-total 2GB
    reg = %bgfetch my-data https://example.org/a.csv        # keep it in a variable
    reg = %bgfetch my-data https://example.org/a.csv;       # ';' shows nothing, still binds
    %bgfetch my-data https://example.org/a.csv --force      # download again, in place
    %bgfetch my-data https://example.org/b.parquet --segments 16   # big files: 16 connections

    %%bgfetch my-data --title "My data" --download-total 1.5GiB
    # one URL a line, optionally followed by its integrity; blank lines and # comments ok
    https://example.org/a.csv  sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
    https://example.org/b.parquet

Re-running a cell is free: when the last registration with that id succeeded with the
same URLs and --dest, and its files are still there, you get it back as it is.

Options (start):
    --title TEXT            title shown in the panel
    --icon SRC              icon URL for the panel (repeatable)
    --download-total SIZE   fail if more than SIZE arrives: 123 (bytes), 60MB, 60 MB,
                            1.5GiB, 10k (SI = 1000s, KiB/MiB/GiB/TiB = 1024s); 0 = no limit
    --dest DIR              folder for the files (default: under the manager's home)
    -H, --header "Name: value"   HTTP header for every request (repeatable)
    --force                 download again even if an earlier run already did
    --checksum              on a re-run, also re-hash the files before reusing them
    --segments N            connections per big file, for servers that cap each one
                            (default: up to the per-host budget; 1 = never split)
    --min-segment-size SIZE files under twice this are never split (default 4MiB)

Manage registrations (from any notebook or script sharing the same home):

    %bgfetch                  the manager panel: every registration
    %bgfetch list             every registration as a table (a list of registrations)
    %bgfetch get ID           the registration (active, else the newest settled one)
    %bgfetch abort ID         stop it; finished records keep their data
    %bgfetch pause ID         pause ... and %bgfetch resume ID
    %bgfetch resume ID -H "Authorization: Bearer <token>"   resume, giving credentials again
    %bgfetch wait ID [--timeout SECONDS]   block until it settles (Ctrl-C stops waiting only)
    %bgfetch wait --all       wait for every active registration
    %bgfetch retry ID         fetch the failed records again; the good ones stay
    %bgfetch delete ID        remove the latest registration with that id, its records and files
    %bgfetch delete ID --all  remove every registration with that id
    %bgfetch fetch list URL   explicit verb, for an id that equals a verb

URLs are taken literally: $name and {name} are not expanded, so query strings are safe.
In Python: await reg (waits without blocking the kernel), reg.wait(), reg.match_all().
"""


@magics_class
class BgFetchMagics(Magics):
    """The ``%bgfetch`` / ``%%bgfetch`` magics."""

    @no_var_expand
    @line_cell_magic
    def bgfetch(self, line: str, cell: str | None = None) -> Any:
        command = parse_line(line) if cell is None else parse_cell(line, cell)
        return run_command(command)


# ``%bgfetch?`` shows the magic's docstring: make that the full help with examples.
BgFetchMagics.bgfetch.__doc__ = _HELP


_SILENCED_CALL = re.compile(r"run_line_magic\((['\"])bgfetch\1, .*;['\"]\)\s*$")
#: Verbs that print their own one-line outcome: on a line of their own, their value (the
#: registration, for ``r = %bgfetch pause ID``) is not displayed as a second panel.
_QUIET_VERB_CALL = re.compile(
    r"^\s*get_ipython\(\)\.run_line_magic\((['\"])bgfetch\1, (['\"])\s*"
    r"(abort|pause|resume|retry|wait|delete)\s.*\)\s*$"
)


def keep_semicolon(lines: list[str]) -> list[str]:
    """``reg = %bgfetch ID URL;``: IPython turns the line into a call whose ``;`` is inside
    the magic's string, where its display hook does not see it. The magic returns its
    value either way (so the assignment binds the registration), and this input
    transformer keeps the ``;``'s promise outside: a bare silenced call ends in ``; None``
    (nothing to display), an assignment gets a ``;`` after the call. A verb that prints
    its one-line outcome (``%bgfetch pause ID``) on a line of its own is not displayed
    again as a panel either.

    >>> keep_semicolon(["r = get_ipython().run_line_magic('bgfetch', 'x https://a/b;')\n"])
    ["r = get_ipython().run_line_magic('bgfetch', 'x https://a/b;');\n"]
    >>> keep_semicolon(["get_ipython().run_line_magic('bgfetch', 'x https://a/b;')\n"])
    ["get_ipython().run_line_magic('bgfetch', 'x https://a/b;'); None\n"]
    """
    out = []
    for line in lines:
        if _QUIET_VERB_CALL.search(line) and not _SILENCED_CALL.search(line):
            body = line.rstrip()
            line = body + "; None" + line[len(body) :]
        elif _SILENCED_CALL.search(line):
            body = line.rstrip()
            bare = body.lstrip().startswith("get_ipython().run_line_magic(")
            line = body + ("; None" if bare else ";") + line[len(body) :]
        out.append(line)
    return out


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """``%load_ext ipybgfetch``: register ``%bgfetch`` and ``%%bgfetch``.

    It also starts the default manager, so registrations an earlier kernel left
    unfinished resume now (unless ``IPYBGFETCH_AUTO_RESUME=0``).
    """
    ipython.register_magics(BgFetchMagics)
    post = getattr(ipython, "input_transformers_post", None)
    if isinstance(post, list) and keep_semicolon not in post:
        post.append(keep_semicolon)
    _manager().registrations()


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """``%unload_ext ipybgfetch``: remove the magics. Running downloads keep going."""
    post = getattr(ipython, "input_transformers_post", None)
    if isinstance(post, list) and keep_semicolon in post:
        post.remove(keep_semicolon)
    manager = ipython.magics_manager
    assert manager is not None  # set by every InteractiveShell
    for kind in ("line", "cell"):
        manager.magics[kind].pop(MAGIC_NAME, None)
    manager.registry.pop(BgFetchMagics.__name__, None)
