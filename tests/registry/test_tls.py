"""TLS: verified by default, a private CA trusted with --ca-cert, plain http only where allowed."""
from __future__ import annotations

import datetime
import ipaddress
import socket

import pytest

from builder.cli import main
from builder.registry.errors import RegistryUnreachableError
from builder.registry.pull import pull_image
from builder.registry.push import push_image
from builder.registry.transport import RegistryOptions, RetryPolicy
from images import make_image
from servers import RegistryServer

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)


def non_loopback_ip() -> str | None:
    """An address of this machine that is not loopback, so loopback leniency does not apply."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent for UDP connect
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def make_ca_and_server_cert(workdir, ip: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pybuild test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: workdir / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory):
    ip = non_loopback_ip()
    if ip is None:
        pytest.fail("this machine has no non-loopback IPv4 address to test TLS verification with")
    workdir = tmp_path_factory.mktemp("tls-registry")
    paths = make_ca_and_server_cert(workdir, ip)
    server = RegistryServer(workdir, bind=ip, tls=(paths["cert"], paths["key"])).start()
    server.ca = paths["ca"]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_non_loopback_registry(tmp_path_factory):
    ip = non_loopback_ip()
    if ip is None:
        pytest.fail("this machine has no non-loopback IPv4 address")
    server = RegistryServer(tmp_path_factory.mktemp("plain-lan"), bind=ip).start()
    yield server
    server.stop()


def test_untrusted_certificate_is_refused(tls_registry, store):
    with pytest.raises(RegistryUnreachableError, match="TLS") as err:
        pull_image(f"{tls_registry.host}/a/b:v1", store, options=RegistryOptions(retry=FAST))
    assert err.value.hint


def test_private_ca_is_trusted_with_ca_cert(tls_registry, store, tmp_path):
    image = make_image(store, [{"tls": b"over https"}])
    options = RegistryOptions(ca_cert=str(tls_registry.ca), retry=FAST)
    ref = f"{tls_registry.host}/team/tls:v1"
    push_image(ref, store, image.manifest, options=options)
    from images import DirBlobStore

    assert pull_image(ref, DirBlobStore(tmp_path / "f"), options=options).manifest.digest == image.manifest.digest


def test_plain_http_only_when_named_insecure(plain_non_loopback_registry, store):
    image = make_image(store, [{"plain": b"http"}])
    ref = f"{plain_non_loopback_registry.host}/team/plain:v1"
    with pytest.raises(RegistryUnreachableError):
        push_image(ref, store, image.manifest, options=RegistryOptions(retry=FAST))
    insecure = RegistryOptions(insecure_registries=frozenset({plain_non_loopback_registry.host}), retry=FAST)
    assert push_image(ref, store, image.manifest, options=insecure).digest == image.manifest.digest


def test_cli_reports_tls_failure_in_one_line(tls_registry, capsys):
    code = main(["login", "-u", "x", "-p", "y", tls_registry.host])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and "TLS" in err and "Traceback" not in err


def test_insecure_registry_serving_tls_is_used_without_verification(tls_registry, store):
    image = make_image(store, [{"tls": b"insecure but https"}])
    options = RegistryOptions(insecure_registries=frozenset({tls_registry.host}), retry=FAST)
    ref = f"{tls_registry.host}/team/insecure-tls:v1"
    assert push_image(ref, store, image.manifest, options=options).digest == image.manifest.digest


def test_loopback_registry_serving_tls_works_like_docker_does(tmp_path_factory, store):
    workdir = tmp_path_factory.mktemp("loopback-tls")
    paths = make_ca_and_server_cert(workdir, "127.0.0.1")
    server = RegistryServer(workdir, tls=(paths["cert"], paths["key"])).start()
    try:
        image = make_image(store, [{"tls": b"loopback https"}])
        ref = f"{server.host}/team/loopback-tls:v1"
        assert push_image(ref, store, image.manifest).digest == image.manifest.digest
        assert pull_image(ref, store).manifest.digest == image.manifest.digest
    finally:
        server.stop()
