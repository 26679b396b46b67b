"""A test CA, a server certificate and stunnel terminating TLS in front of a broker."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from consumers.local.broker import EmbeddedBroker, free_port
from tests.support.processes import stop_process


@dataclass(frozen=True)
class Authority:
    cert: Path
    key: Path


def openssl(*args: str | Path) -> None:
    done = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"openssl {args[0]} failed: {done.stderr}")


def make_authority(folder: Path, name: str) -> Authority:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", key, "-out", cert,
    )  # fmt: skip
    return Authority(cert, key)


def issue_server_cert(ca: Authority, folder: Path) -> Path:
    """A certificate for 127.0.0.1 and localhost signed by ``ca``; key and cert in one
    PEM file, as stunnel takes it."""
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", key, "-out", csr,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
        "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", cert,
    )  # fmt: skip
    bundle = folder / "server.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    return bundle


def stunnel_binary() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        raise AssertionError("stunnel is not installed: run `make stunnel`")
    return found


@contextlib.contextmanager
def stunnel(
    bundle: Path, accept_port: int, connect_port: int, folder: Path
) -> Iterator[None]:
    """stunnel on 127.0.0.1:``accept_port`` (TLS) forwarding to ``connect_port``."""
    config = folder / "stunnel.conf"
    log = folder / "stunnel.log"
    config.write_text(
        "foreground = yes\n"
        f"output = {log}\n"
        "debug = 4\n"
        "[kafka]\n"
        f"accept = 127.0.0.1:{accept_port}\n"
        f"connect = 127.0.0.1:{connect_port}\n"
        f"cert = {bundle}\n"
    )
    process = subprocess.Popen(
        [stunnel_binary(), str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(accept_port, process, log)
        yield
    finally:
        stop_process(process, 5)


def wait_listening(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"stunnel exited: {log.read_text(errors='replace')}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"stunnel not listening on {port} in {timeout_s}s")


@dataclass(frozen=True)
class TlsBroker:
    bootstrap_servers: str  # the TLS endpoint; the broker advertises it
    ca: Authority


@contextlib.contextmanager
def tls_broker(folder: Path) -> Iterator[TlsBroker]:
    """An embedded broker reachable only through stunnel, with a CA of its own."""
    ca = make_authority(folder, "test-ca")
    bundle = issue_server_cert(ca, folder)
    tls_port = free_port()
    address = f"127.0.0.1:{tls_port}"
    with (
        EmbeddedBroker(log_path=folder / "broker.log", advertised=address) as broker,
        stunnel(bundle, tls_port, broker.port, folder),
    ):
        yield TlsBroker(address, ca)
