"""TLS for `bertkit serve --ssl-certfile CERT --ssl-keyfile KEY`: the pair is checked before the model loads."""

from __future__ import annotations

import ssl
from pathlib import Path

from bertkit.errors import OptionError


def check_tls(certfile: Path | None, keyfile: Path | None) -> None:
    """Refuse, with one clear message, a certificate and key that uvicorn could not serve: a missing file, a
    file that is not PEM, a key that does not match the certificate, an encrypted key. No-op without TLS."""
    if certfile is None and keyfile is None:
        return
    if certfile is None:
        raise OptionError("--ssl-keyfile needs --ssl-certfile (the certificate that goes with the key)")
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise OptionError(f"{option} {path} does not exist")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> bytes:  # never prompt on the terminal for an encrypted key
        raise OptionError(f"--ssl-keyfile {keyfile or certfile} is encrypted; serve an unencrypted key "
                          "(e.g. `openssl pkey -in KEY -out KEY.plain`)")

    try:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile is not None else None, password=no_password)
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if "KEY_VALUES_MISMATCH" in str(e):
            key = f"--ssl-keyfile {keyfile}" if keyfile is not None else f"the key in --ssl-certfile {certfile}"
            raise OptionError(f"{key} is not the key of --ssl-certfile {certfile} "
                              "(key values mismatch); give the key the certificate was made for") from None
        given = f"--ssl-certfile {certfile}" + (f" / --ssl-keyfile {keyfile}" if keyfile is not None else "")
        raise OptionError(f"{given}: not a usable PEM certificate and key ({reason})") from None
