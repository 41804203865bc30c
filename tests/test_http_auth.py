"""Who may do what on the HTTP port, as a hostile neighbour would probe it: a browser's page
across origins, the write API beside --auth-keys, and tokens that are nearly right."""

import time

from serverproc import STATUS_TOKEN, serve
from test_formats_server import edge, minute_lines
from test_server_exposure import get, server_json
from test_server_lifecycle import run_cli

#: A write a page on another origin can send without a CORS preflight.
BROWSER = {"Origin": "http://evil.example", "Content-Type": "text/plain"}


def body() -> bytes:
    return b"\n".join(minute_lines("db-7", (int(time.time()) - 3600) // 60 * 60))


def test_a_browser_page_on_another_origin_can_read_but_not_write(tmp_path):
    """A web page a victim opens may POST text/plain to the write API through the victim's
    browser (no preflight for it); it was taken (204) and filed as db-7's use."""
    with serve(tmp_path) as server:
        port = server.http_port
        status, headers, answer = get(port, "/write?db=x&precision=s", "POST", BROWSER, body=body())
        assert status == 403 and b"Origin" in answer
        assert "access-control-allow-origin" not in headers
        status, headers, _ = get(port, "/status", headers=BROWSER)
        assert status == 200 and "access-control-allow-origin" not in headers
        assert get(port, "/query", "POST", BROWSER, body=b"q=x")[0] == 403  # any path
        status, headers, _ = get(port, "/write", "OPTIONS", dict(
            BROWSER, **{"Access-Control-Request-Method": "POST"}))  # a preflight: no CORS
        assert status == 403 and "access-control-allow-origin" not in headers
        metrics = server.metrics()
        assert metrics['vmstats_http_requests_refused_total{reason="cross_origin"}'] == 3
        assert edge(metrics, "influx", "used") == 0
        status, _, _ = get(port, "/write?db=x&precision=s", "POST",
                           {"Content-Type": "text/plain"}, body=body())
        assert status == 204  # the same write from a program: the API is open without a token
        assert edge(server.metrics(), "influx", "used") > 0


def test_with_auth_keys_the_write_api_needs_its_own_token(tmp_path):
    """--auth-keys binds keys to VMs; the write API took db-7's records from anyone all the
    same (204), unsigned, with no token set."""
    keys = tmp_path / "keys"
    keys.write_text("k1 %s db-*\n" % ("a" * 64))
    keys.chmod(0o600)
    with serve(tmp_path / "shut", "--auth-keys", str(keys)) as server:
        for path in ("/write?db=x&precision=s&p=anything", "/api/v2/write?bucket=b&precision=s"):
            status, _, answer = get(server.http_port, path, "POST",
                                    {"Authorization": "Token anything"}, body=body())
            assert status == 403 and b"--write-token" in answer
        metrics = server.metrics()
        assert edge(metrics, "influx", "auth") == 2 and edge(metrics, "influx", "used") == 0
    with serve(tmp_path / "open", "--auth-keys", str(keys), "--write-token", "w-tok") as server:
        status, _, _ = get(server.http_port, "/write?db=x&precision=s", "POST",
                           {"Authorization": "Token w-tok"}, body=body())
        assert status == 204 and edge(server.metrics(), "influx", "used") > 0


def test_a_token_wrong_in_its_last_byte_or_of_the_other_kind_unlocks_nothing(tmp_path):
    with serve(tmp_path, "--write-token", "w-token") as server:
        port = server.http_port
        near = STATUS_TOKEN[:-1] + chr(ord(STATUS_TOKEN[-1]) + 1)
        for token in (near, STATUS_TOKEN + "x", STATUS_TOKEN[:-1], "w-token", ""):
            _, _, answer = get(port, "/status", headers={"Authorization": "Bearer " + token})
            assert "data_dir" not in server_json(answer), token
        for token in ("w-tokeo", "w-toke", "w-tokenn", STATUS_TOKEN):
            for path, headers in (("/write?precision=s&p=" + token, {}),
                                  ("/write?precision=s", {"Authorization": "Token " + token}),
                                  ("/api/v2/write?bucket=b&precision=s",
                                   {"Authorization": "Bearer " + token})):
                status, _, answer = get(port, path, "POST", headers, body=body())
                assert status == 401 and token.encode() not in answer, (path, token)
        assert edge(server.metrics(), "influx", "used") == 0
        status, _, _ = get(port, "/write?precision=s&p=w-token", "POST", body=body())
        assert status == 204
    assert "w-token" not in server.output and STATUS_TOKEN not in server.output


def test_the_write_token_comes_from_a_file_or_the_environment_out_of_ps(tmp_path):
    """--write-token was a flag only, so any local user read it in ps; the status token's file
    and environment forms serve it too, and both the flag and the file are one setting. The
    spaces around a token given in the environment (an env file's trailing blank) are not part
    of it, as they are not of a file's: with them no request could give it."""
    token_file = tmp_path / "write-token"
    token_file.write_text("w-from-file\n")
    token_file.chmod(0o600)
    for where, args, env, token in (
        ("file", ("--write-token-file", str(token_file)), None, "w-from-file"),
        ("env", (), {"VMSTATS_WRITE_TOKEN": "w-from-env "}, "w-from-env"),
    ):
        with serve(tmp_path / where, *args, env=env) as server:
            assert token not in " ".join(server.command())
            for given, expected in (("nearly", 401), (token, 204)):
                status, _, _ = get(server.http_port, "/write?precision=s", "POST",
                                   {"Authorization": "Token " + given}, body=body())
                assert status == expected, (where, given)
        assert token not in server.output
    common = ("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--no-http", "--parsers",
              "0", "--workers", "1", "--data-dir", str(tmp_path / "d"), "--duration", "1s")
    both = run_cli(*common, "--write-token", "w", "--write-token-file", str(token_file))
    assert both.returncode == 2 and both.stderr.strip().splitlines() == [
        "Error: --write-token and --write-token-file are one setting: give one"]
    missing = run_cli(*common, "--write-token-file", str(tmp_path / "absent"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert missing.stderr.startswith("Error: cannot read --write-token-file: ")
