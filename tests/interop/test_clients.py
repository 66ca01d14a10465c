"""certbot, lego and uacme (Debian packages) obtain and revoke certificates from `acmeda serve`
over http-01 on loopback, trusting the CA's own root for the ACME endpoint's TLS."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.interop.conftest import RunningCA, require_tool


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"{command[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def check_leaf(pem: bytes, ca: RunningCA, name: str) -> x509.Certificate:
    chain = x509.load_pem_x509_certificates(pem)
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [name]
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    root = x509.load_pem_x509_certificate(ca.root.read_bytes())
    intermediate = chain[1]
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    return leaf


def assert_revoked(ca: RunningCA, leaf: x509.Certificate) -> None:
    """The CA's renewal info (RFC 9773) for a revoked certificate opens the window now."""
    import json
    import ssl
    import urllib.request
    from datetime import datetime, timezone

    from ca.renewal import cert_id

    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    base = ca.directory.rsplit("/directory", 1)[0]
    context = ssl.create_default_context(cafile=str(ca.root))
    with urllib.request.urlopen(f"{base}/acme/renewal-info/{cert_id(aki, leaf.serial_number)}", context=context) as reply:
        window = json.load(reply)["suggestedWindow"]
    end = datetime.fromisoformat(window["end"].replace("Z", "+00:00"))
    assert end <= datetime.now(timezone.utc), f"certificate {leaf.serial_number:x} is not revoked: {window}"


def test_certbot_issues_and_revokes(running_ca: RunningCA, tmp_path: Path):
    certbot = require_tool("certbot")
    dirs = ["--config-dir", str(tmp_path / "cfg"), "--work-dir", str(tmp_path / "work"), "--logs-dir", str(tmp_path / "logs")]
    env = {"REQUESTS_CA_BUNDLE": str(running_ca.root)}
    name = "certbot.acmeda.test"
    run([certbot, "certonly", "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
         "--server", running_ca.directory, "--standalone", "--http-01-address", "127.0.0.1",
         "--http-01-port", str(running_ca.http01_port), "--key-type", "ecdsa", "-d", name, *dirs], env=env)
    cert_path = tmp_path / "cfg" / "live" / name / "fullchain.pem"
    leaf = check_leaf(cert_path.read_bytes(), running_ca, name)
    run([certbot, "revoke", "--non-interactive", "--server", running_ca.directory, "--cert-path", str(cert_path),
         "--reason", "superseded", "--no-delete-after-revoke", *dirs], env=env)
    assert_revoked(running_ca, leaf)


def test_lego_issues_and_revokes(running_ca: RunningCA, tmp_path: Path):
    lego = require_tool("lego")
    env = {"LEGO_CA_CERTIFICATES": str(running_ca.root)}
    name = "lego.acmeda.test"
    common = [lego, "--server", running_ca.directory, "--accept-tos", "--email", "ops@acmeda.test",
              "--domains", name, "--path", str(tmp_path), "--http", "--http.port", f"127.0.0.1:{running_ca.http01_port}"]
    run([*common, "run"], env=env)
    leaf = check_leaf((tmp_path / "certificates" / f"{name}.crt").read_bytes(), running_ca, name)
    assert leaf.not_valid_after_utc > leaf.not_valid_before_utc
    run([*common, "revoke"], env=env)
    assert_revoked(running_ca, leaf)


class _Webroot(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass


def test_uacme_issues_and_revokes(running_ca: RunningCA, tmp_path: Path):
    uacme = require_tool("uacme")
    require_tool("unshare")
    webroot = tmp_path / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    hook = tmp_path / "hook.sh"
    # uacme calls: hook METHOD TYPE IDENT TOKEN AUTH; serve AUTH for http-01, decline other types.
    hook.write_text(f"""#!/bin/sh
[ "$2" = "http-01" ] || exit 1
case "$1" in
  begin) printf '%s' "$5" > "{webroot}/.well-known/acme-challenge/$4" ;;
  done|failed) rm -f "{webroot}/.well-known/acme-challenge/$4" ;;
esac
""")
    hook.chmod(0o755)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", running_ca.http01_port), partial(_Webroot, directory=str(webroot)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # uacme's libcurl-gnutls reads only the system bundle: give it the CA's root in a private
        # mount namespace, so the machine's trust store is never touched.
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(running_ca.root.read_bytes())
        confdir = tmp_path / "uacme"
        name = "uacme.acmeda.test"
        uacme_in_ns = f"mount --bind {bundle} /etc/ssl/certs/ca-certificates.crt && {uacme} -v -y -c {confdir} -a {running_ca.directory}"
        run(["unshare", "-m", "sh", "-c", f"{uacme_in_ns} -t EC new && {uacme_in_ns} -t EC -h {hook} issue {name}"])
        leaf = check_leaf((confdir / name / "cert.pem").read_bytes(), running_ca, name)
        run(["unshare", "-m", "sh", "-c", f"{uacme_in_ns} revoke {confdir}/{name}/cert.pem"])
        assert_revoked(running_ca, leaf)
    finally:
        server.shutdown()
        server.server_close()
