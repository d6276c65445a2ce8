"""MLLP over TLS with client certificates: the certificate names the trust,
and MSH-4 must agree with it. Real TLS sockets on loopback; throwaway CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.mllp import MllpFramer, MllpServer, frame, server_tls_context

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7"


def _cert(subject_cn: str, issuer_key, issuer_name, key, *, ca: bool = False, san_ip: bool = False):  # noqa: ANN001, ANN202
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san_ip:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert, key) -> tuple[Path, Path]:  # noqa: ANN001
    c, k = path.with_suffix(".crt"), path.with_suffix(".key")
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("S117 Hub test CA", ca_key, None, ca_key, ca=True)
    ca_path, _ = _write(tmp_path / "ca", ca, ca_key)
    out = {"ca": ca_path}
    for name, cn, san in (("server", "s117hub", True), ("rnu", "RNU", False), ("rv3", "RV3", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name], out[name + "_key"] = _write(tmp_path / name, _cert(cn, ca_key, ca.subject, key, san_ip=san), key)
    return out


async def _send(port: int, pki: dict[str, Path], client: str | None) -> str:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki["ca"])
    if client:
        ctx.load_cert_chain(pki[client], pki[client + "_key"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(frame(FIXTURE.read_bytes().decode()))
        await writer.drain()
        framer = MllpFramer()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 15)
            if not data:
                raise ConnectionError("closed without an ACK")
            frames = framer.feed(data)
            if frames:
                return frames[0].payload.decode()
    finally:
        writer.close()


async def test_client_certificate_names_the_sender_and_msh4_must_match(app_hub, pki):
    tls = server_tls_context(pki["server"], pki["server_key"], pki["ca"])
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0, tls=tls)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        await asyncio.sleep(0.1)
        ack = await _send(server.port, pki, "rnu")  # certificate RNU, MSH-4 RNU
        assert "|AA|" in ack, ack
        ack = await _send(server.port, pki, "rv3")  # RV3's certificate claiming to be RNU
        assert "|AR|" in ack and "client certificate" in ack
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await _send(server.port, pki, None)  # no certificate: no connection
    finally:
        stop.set()
        await task
