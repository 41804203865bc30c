"""Asking a running server over HTTP: its address (``--url``) and one request's JSON answer.

``vmstats alerts --url`` and ``vmstats rules mute``, ``mutes`` and ``unmute`` share this, so an
address is read, refused and shown the same way in each, and every way a request can fail is
one ``Error:`` line (README.md, exit status):

- an address that is no ``http://`` or ``https://`` URL, or carries a user, a password, a
  query or a fragment, is the command line's mistake: refused before any work, status 2.
  urllib took ``ftp://`` and ``file://`` (``file:///srv`` read the local file /srv/alerts), and
  echoed a password or token written in the URL into the error line; the line shows
  ``***`` and ``?...`` in their place.
- what happens on the way (nothing listens, no answer, not HTTP, an HTTP error) is a failure,
  status 1, except a refusal the server words (4xx with ``{"error": ...}``): status 2.
- a page not found, without the server's word why, is looked into (``_not_found``): an older
  server that lacks the page is told from a wrong port or path by whether the same address
  answers a vmstats /status, since the server names no version.

``--timeout`` is how long the command waits, full stop (a script run from cron counts on
it): the whole exchange, the name's lookup, the connection, the TLS handshake, the request
and the answer, ends by then, so a server that trickles its answer a byte a second is given
up as surely as one that says nothing (a limit on each wait alone let it hold the command
for ever), and so is a resolver that never answers (the lookup had no limit: the resolver's
own retries, 10 s and more, ran their course).  A host that does not take the connection is
given up sooner, after CONNECT_TIMEOUT, and an answer larger than MAX_ANSWER is not read on
(an endless or broken endpoint would fill memory); each said as what it was, naming the
step whose time ran out (a TLS handshake that did not end was said as no connection).

The request goes straight to the address: no proxy from the environment (an ``http_proxy``
meant for the outside sent requests for 127.0.0.1 through it), and a redirect is reported,
not followed (urllib turned a redirected POST into a GET, so a mute was never made).
"""

import functools
import http.client
import io
import json
import re
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import click

from vmstats import inputfile
from vmstats.options import FiniteRange, Refused
from vmstats.server.config import DEFAULT_HTTP_PORT

#: Where ``vmstats rules mute`` and its kin find the server unless told.
DEFAULT_URL = "http://127.0.0.1:%d" % DEFAULT_HTTP_PORT

#: Seconds to wait for the server's answer (``--timeout``): its pages take milliseconds, but
#: a busy server on a slow link may take seconds, and a mute by tag reads the VMs' logs first.
ANSWER_TIMEOUT = 10.0

#: Seconds to wait for the connection, at most (``--timeout`` if that is less): enough for a
#: lost SYN to be sent again twice (after 1 s and 3 s), short of the answer's wait, so an
#: address where nothing takes the connection (a firewall dropping it) is said promptly.
CONNECT_TIMEOUT = 4.0

#: Bytes of an answer's body read at most.  A server's /alerts with its token lists every
#: scope of every rule (about 115 bytes each) and the last 200 log entries: 1,000 VMs in alarm
#: made 150 kB, so this holds some 500,000 scopes, and stops an endless answer at a bound.
MAX_ANSWER = 64 << 20

#: What a vmstats server's 404 says of a path it has no page for (``{"error": "not found"}``;
#: plain text ``not found`` in its first versions), where a page it lacks for a reason says why.
NOT_FOUND = "not found"

#: The page every vmstats server has answered, asked when another is not found; and keys its
#: JSON has held from the first version on, by which it is known.
STATUS_PAGE = "/status"
STATUS_KEYS = ("uptime_seconds", "records_received", "vms_seen")

#: Characters of a non-HTTP answer quoted in the error line.
_QUOTED = 40


class UrlProblem(ValueError):
    """An address that cannot be asked: the message shows it without a secret (``shown``)."""


@dataclass(frozen=True)
class ServerURL:
    """A server's address, checked: ``prefix`` is the path before its pages ("" or, behind
    a proxy, ``/vmstats``), without the trailing slash."""

    scheme: str
    host: str
    port: int
    prefix: str

    @property
    def place(self) -> str:
        """``host:port`` (``[::1]:8898``), as the error lines name where they went."""
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)

    def url(self, path: str = "") -> str:
        """The address of ``path`` (``/alerts``) on the server."""
        return "%s://%s%s%s" % (self.scheme, self.place, self.prefix, path)


def shown(text: str) -> str:
    """``text`` as a line may show it: a user and password before the host become ``***``,
    a query or fragment ``?...`` or ``#...`` (either may carry a token)."""
    start = text.find("://")
    start = 0 if start < 0 else start + 3
    end = len(text)
    for mark in "/?#":
        found = text.find(mark, start)
        if found >= 0:
            end = min(end, found)
    at = text.rfind("@", start, end)
    if at >= 0:
        text = text[:start] + "***" + text[at:]
    cut = min((i for i in (text.find("?", start), text.find("#", start)) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut + 1] + "..."


def parse_url(text: str) -> ServerURL:
    """The server's address in ``text``; UrlProblem, naming it as ``shown``, if it is none."""
    said = repr(shown(text))
    if re.search(r"[\x00-\x20\x7f]", text):
        raise UrlProblem("%s has a space or control character" % said)
    if "://" not in text:
        raise UrlProblem("%s is not a URL: give http://HOST:PORT, e.g. %s" % (said, DEFAULT_URL))
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise UrlProblem("%s is not a URL: %s" % (said, exc)) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlProblem("%s is not an http:// or https:// URL" % said)
    if "@" in parts.netloc:
        raise UrlProblem("%s: a user or password in the URL is not sent; give the status token "
                         "with --token-file" % said)
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise UrlProblem("%s: the server's address takes no query (?) or fragment (#)" % said)
    if not parts.hostname:
        raise UrlProblem("%s names no host" % said)
    try:
        port = parts.port
    except ValueError:  # "Port could not be cast to integer value", "Port out of range"
        port = 0
    if port == 0:
        raise UrlProblem("%s: the port is not a number from 1 to 65535" % said)
    host = parts.hostname
    if ":" in host:  # an IPv6 address; its zone is written %25eth0 in a URL
        host = urllib.parse.unquote(host)
    else:
        try:
            host.encode("idna")  # what the connection does with it: a traceback there
        except UnicodeError:
            raise UrlProblem("%s: %r is not a host name" % (said, host)) from None
    scheme = parts.scheme.lower()
    # A path as a browser sends it: a character a request line cannot carry is %-encoded.
    prefix = urllib.parse.quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
    return ServerURL(scheme, host, port or (443 if scheme == "https" else 80), prefix)


class ServerURLType(click.ParamType):
    """``--url``: refused before any work when it is no server address (status 2, one line
    that shows no secret)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ServerURL:
        if isinstance(value, ServerURL):
            return value
        try:
            return parse_url(value)
        except UrlProblem as exc:
            hint = param.get_error_hint(ctx) if param is not None and ctx is not None else "--url"
            raise Refused("Invalid value for %s: %s" % (hint, exc)) from None


def timeout_option(command):
    """``--timeout``: how long the command waits for the server, all told."""
    return click.option(
        "--timeout", type=FiniteRange(0, min_open=True), default=ANSWER_TIMEOUT, show_default=True,
        metavar="SECONDS",
        help="Seconds the whole exchange may take: the name's lookup, the connection (at most "
             "%g of them), the TLS handshake, the request and the answer." % CONNECT_TIMEOUT)(command)


def ask(server: ServerURL, path: str, token: str | None, method: str = "GET",
        body: dict | None = None, timeout: float = ANSWER_TIMEOUT) -> object:
    """The JSON answer of ``server`` to ``method path``; one ClickException line when it
    cannot be had.

    Each way it fails is said as what it was, naming the address: nothing listening, no
    connection or no answer in time, an answer that is not HTTP or not JSON, an HTTP error.
    An HTTP error whose body says what was wrong (``{"error": ...}``, as the server's pages
    answer) is that line: status 2 when the server refused what was asked (4xx: the mute,
    the id, the token), 1 when it failed (5xx).
    """
    where = server.url(path)
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers: dict[str, str | bytes] = {"Accept": "application/json"}
    if token:
        if re.search(r"[\x00-\x1f\x7f]", token):  # http.client's refusal quoted the token
            raise Refused("the status token has a control character, which a header cannot carry")
        headers["Authorization"] = ("Bearer " + token).encode("utf-8")  # as the server reads it
    if data is not None:
        headers["Content-Type"] = "application/json"
    ends = time.monotonic() + timeout
    status, reason, answer, location = _exchange(server, method, path, data, headers, ends, timeout)
    if status >= 400:
        said = _error_of(answer)
        line = "%s: %s" % (where, said) if said is not None else \
            "cannot read %s: HTTP %d %s" % (where, status, reason)
        if status == 404 and said in (None, NOT_FOUND):  # no page of the server's naming
            line += _not_found(server, path, ends, timeout)
        raise (Refused if said is not None and status < 500 else click.ClickException)(line)
    if status >= 300:  # not followed: see the module's note
        to = " to %s" % shown(location)[:200] if location else ""
        raise click.ClickException("cannot read %s: HTTP %d %s%s (give the address it names as "
                                   "--url)" % (where, status, reason, to))
    try:
        return inputfile.json_loads(answer)
    except ValueError as exc:
        raise click.ClickException("cannot read %s: the answer is not JSON (%s)" % (where, exc)) from None


def _exchange(server: ServerURL, method: str, path: str, data: bytes | None,
              headers: dict[str, str | bytes], ends: float,
              timeout: float) -> tuple[int, str, bytes, str | None]:
    """One request, over by ``ends`` (``timeout`` seconds from the command's first): the
    answer's status, reason, body (at most MAX_ANSWER bytes) and Location; ClickException if
    none."""
    where = server.url(path)
    if server.scheme == "https":
        context = ssl.create_default_context()  # the system's CA store, or SSL_CERT_FILE
        context.set_alpn_protocols(["http/1.1"])  # as http.client's own
        connection = http.client.HTTPSConnection(server.host, server.port, context=context)
    else:
        context = None
        connection = http.client.HTTPConnection(server.host, server.port)
    try:  # the connection writes the request and reads the answer; the socket is made here
        connection.sock = _connected(server, where, ends, timeout, context)
        reader = _Deadline(connection.sock, ends)
        connection.response_class = functools.partial(_TimedResponse, reader=reader)
        try:
            connection.sock.settimeout(max(ends - time.monotonic(), 0.001))
            connection.request(method, server.prefix + path, body=data, headers=headers)
            response = connection.getresponse()
            if response.length is not None and response.length > MAX_ANSWER:
                raise _TooLarge()
            body = _body_of(response)
            return response.status, response.reason, body, response.getheader("Location")
        except TimeoutError:
            if reader.got:  # it began to answer, and did not finish
                raise click.ClickException(
                    "cannot read %s: the answer from %s did not end within %g s (%d bytes by "
                    "then; --timeout waits longer)" % (where, server.place, timeout, reader.got)) from None
            raise click.ClickException(
                "cannot read %s: no HTTP answer from %s within %g s (is it the server's HTTP "
                "port? --timeout waits longer)" % (where, server.place, timeout)) from None
        except _TooLarge:
            raise click.ClickException(
                "cannot read %s: the answer from %s is larger than %d MiB, more than a vmstats "
                "page (is it the server's HTTP port?)" % (where, server.place, MAX_ANSWER >> 20)) from None
        except http.client.RemoteDisconnected:
            raise click.ClickException("cannot read %s: %s closed the connection without an HTTP "
                                       "answer" % (where, server.place)) from None
        except http.client.BadStatusLine as exc:
            raise click.ClickException("cannot read %s: %s does not answer HTTP (it said %r)"
                                       % (where, server.place, exc.line[:_QUOTED])) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise click.ClickException("cannot read %s: %s" % (where, _reason(exc))) from None
    finally:
        connection.close()


def _connected(server: ServerURL, where: str, ends: float, timeout: float,
               context: ssl.SSLContext | None) -> socket.socket:
    """A connection to ``server``, through TLS in ``context`` (https://), made by ``ends``:
    the name looked up, each of its addresses tried in turn (for CONNECT_TIMEOUT each at
    most), the handshake done; ClickException naming the step that failed or was not over in
    time.

    http.client's own connect did not bound the lookup (a resolver that does not answer held
    the command for its own retries, 10 s and more), gave each address and then the handshake
    a limit of their own, on top of one another and not counted in ``ends``, and said a
    handshake that did not end as no connection."""
    try:
        addresses = _looked_up(server.host, server.port, ends)
    except TimeoutError:
        raise click.ClickException("cannot read %s: %s not resolved within %g s (is the name "
                                   "right? --timeout waits longer)" % (where, server.host, timeout)) from None
    except socket.gaierror as exc:
        raise click.ClickException("cannot read %s: cannot resolve %s: %s"
                                   % (where, server.host, exc.strerror or exc)) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException("cannot read %s: %s" % (where, _reason(exc))) from None
    try:
        sock = _dialled(addresses, ends, timeout)
    except TimeoutError as exc:  # the seconds it waited: the connect's limit or the command's
        raise click.ClickException("cannot read %s: no connection to %s within %g s"
                                   % (where, server.place, exc.args[0])) from None
    except OSError as exc:
        raise click.ClickException("cannot read %s: %s" % (where, _reason(exc))) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client sets it
    except OSError:
        pass
    if context is None:
        return sock
    try:
        return _handshake(sock, context, server.host, ends)
    except TimeoutError:
        sock.close()
        raise click.ClickException(
            "cannot read %s: the TLS handshake with %s did not end within %g s (is it an "
            "https:// port? --timeout waits longer)" % (where, server.place, timeout)) from None
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise click.ClickException("cannot read %s: the certificate of %s is not trusted: %s"
                                   % (where, server.place, exc.verify_message)) from None
    except (OSError, ValueError) as exc:
        sock.close()
        raise click.ClickException(
            "cannot read %s: the TLS handshake with %s failed: %s (is it an https:// port?)"
            % (where, server.place, _ssl_reason(exc))) from None


def _looked_up(host: str, port: int, ends: float) -> list[tuple]:
    """``host``'s addresses, looked up by the system's resolver in a thread of its own and
    waited for until ``ends``; TimeoutError past it.  The lookup cannot be stopped: its thread
    is left to end or to end with the command (a daemon thread)."""
    done = threading.Event()
    found: list = []

    def look() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # gaierror, UnicodeError: said by the caller
            found.append(exc)
        done.set()

    threading.Thread(target=look, name="lookup", daemon=True).start()
    if not done.wait(max(ends - time.monotonic(), 0)):
        raise TimeoutError(host)
    if isinstance(found[0], Exception):
        raise found[0]
    return found[0]


def _dialled(addresses: list[tuple], ends: float, timeout: float) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that takes it, each given CONNECT_TIMEOUT
    or what is left before ``ends``, if less; else the last one's OSError, or TimeoutError
    with the seconds waited (CONNECT_TIMEOUT, or ``timeout`` when the command's time ran out)."""
    problem: OSError = TimeoutError(timeout)  # no time left to try any
    for family, kind, proto, _name, address in addresses:
        limit = min(CONNECT_TIMEOUT, ends - time.monotonic())
        if limit <= 0:
            break
        sock = None
        try:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(limit)
            sock.connect(address)
            return sock
        except TimeoutError:
            problem = TimeoutError(CONNECT_TIMEOUT if limit == CONNECT_TIMEOUT else timeout)
        except OSError as exc:
            problem = exc
        if sock is not None:
            sock.close()
    raise problem


def _handshake(sock: socket.socket, context: ssl.SSLContext, host: str, ends: float) -> ssl.SSLSocket:
    """``sock`` through TLS, its certificate checked for ``host`` as http.client checks it,
    the handshake over by ``ends`` (TimeoutError past it): driven without blocking, so the
    whole of it is bounded, not each wait for the peer's bytes."""
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        tls.setblocking(False)
        with selectors.DefaultSelector() as waiting:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    event = selectors.EVENT_READ
                except ssl.SSLWantWriteError:
                    event = selectors.EVENT_WRITE
                left = ends - time.monotonic()
                waiting.register(tls, event)
                ready = left > 0 and waiting.select(left)
                waiting.unregister(tls)
                if not ready:
                    raise TimeoutError("the TLS handshake")
        tls.setblocking(True)
    except BaseException:
        tls.close()
        raise
    return tls


def _not_found(server: ServerURL, path: str, ends: float, timeout: float) -> str:
    """What the address tells of a page not found, said after the 404: whether a vmstats
    server answers there (its /status, asked in what is left of ``timeout``), so that an
    address that is wrong (the port, the path before the pages) is told from a server that
    lacks the page; "" if that cannot be had.

    The server names no version (no ``Server`` header; /status has none), so an older one
    is known by the page it lacks: a server of this version serves /alerts and /mutes, or
    says in their 404 which option would (``--rules``).  Its /status answered with
    STATUS_KEYS from the first version on."""
    page = path.partition("?")[0]
    probe = server.url(STATUS_PAGE)
    if ends - time.monotonic() <= 0:
        return ""
    try:
        status, reason, answer, _location = _exchange(
            server, "GET", STATUS_PAGE, None, {"Accept": "application/json"}, ends, timeout)
    except click.ClickException:  # the time ran out, or the peer went: the 404 alone is sure
        return ""
    if status == 200 and is_status_page(answer):
        return (": %s is a vmstats server (its %s answers) without %s: older than this command, "
                "or run without the option that serves it (a current server says which)"
                % (server.url(), STATUS_PAGE, page))
    return (", nor is %s a vmstats page (HTTP %d %s): no vmstats server answers at %s (is --url "
            "its HTTP port, and the path a proxy serves it under?)"
            % (probe, status, reason, server.url()))


def is_status_page(answer: bytes) -> bool:
    """Is ``answer`` a vmstats server's /status (without its token)?"""
    try:
        page = inputfile.json_loads(answer)
    except ValueError:
        return False
    return isinstance(page, dict) and all(key in page for key in STATUS_KEYS)


class _TooLarge(Exception):
    """An answer past MAX_ANSWER."""


class _Deadline(io.RawIOBase):
    """The connection's bytes, each wait for them bounded by what is left of the exchange's
    time (a socket's own timeout is per wait: a byte a second never reached it)."""

    def __init__(self, sock: socket.socket, ends: float):
        super().__init__()
        self.sock = sock
        self.ends = ends
        self.got = 0  # bytes received: whether the server began to answer

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("the exchange's time is up")
        self.sock.settimeout(left)
        count = self.sock.recv_into(buffer)
        self.got += count
        return count


class _TimedResponse(http.client.HTTPResponse):
    """An answer read through ``reader`` (its status line and headers too), not the socket's
    own file."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, reader: _Deadline):
        super().__init__(sock, debuglevel, method, url)
        # The socket's own file is not read from, but held: the connection hands the socket
        # to an answer that ends at the hang-up, and the file keeps it open until then.
        self._held = self.fp
        self.fp = io.BufferedReader(reader)

    def _close_conn(self) -> None:
        super()._close_conn()
        self._held.close()


def _body_of(response: http.client.HTTPResponse) -> bytes:
    """The answer's body, read in pieces so that no more than MAX_ANSWER bytes are held;
    _TooLarge past that, IncompleteRead if it ends short of its Content-Length."""
    pieces = []
    size = 0
    while True:
        piece = response.read(64 << 10)
        if not piece:
            break
        size += len(piece)
        if size > MAX_ANSWER:
            raise _TooLarge()
        pieces.append(piece)
    body = b"".join(pieces)
    if response.length:  # the connection closed before the body's announced end
        raise http.client.IncompleteRead(body, response.length)
    return body


def _reason(exc: Exception) -> str:
    """What went wrong, without errno's number: ``Connection refused``."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _ssl_reason(exc: Exception) -> str:
    """A TLS failure's reason without OpenSSL's code and source line: ``[SSL:
    WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1002)`` is ``wrong version number``."""
    return re.sub(r"^\[SSL(: \w+)?\] | \(_ssl\.c:\d+\)$", "", _reason(exc)).strip() or type(exc).__name__


def _error_of(answer: bytes) -> str | None:
    """The ``error`` line of a vmstats page's refusal, if that is what came back."""
    try:
        said = inputfile.json_loads(answer[:64 << 10])
    except ValueError:
        return None
    error = said.get("error") if isinstance(said, dict) else None
    return error if isinstance(error, str) else None
