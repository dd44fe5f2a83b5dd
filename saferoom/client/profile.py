"""The client's profile: which server, which authority to trust, and who the user is (their certificate).

``saferoom certs issue`` writes one next to the files it issues; copy that directory to
``~/.config/saferoom/`` (or point ``--profile`` / ``SAFEROOM_PROFILE`` at its ``profile.toml``). Paths in the
file are relative to the file's own directory::

    name = "alice"
    server = "saferoom.example.gov:50051"
    ca = "ca.crt"
    cert = "cert.pem"
    key = "key.pem"
    signing_key = "signing.key"   # operators only: signs approvals

Which server: an explicit ``server`` (the CLI's ``--server``) wins over ``$SAFEROOM_SERVER``, which wins over
the profile's ``server`` (``Profile.with_server``); the client and the CLI both resolve it so.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from saferoom.errors import InvalidRequest

__all__ = ["SERVER_ENV", "Profile", "default_profile_path"]

SERVER_ENV = "SAFEROOM_SERVER"
_KEYS = {"name", "server", "ca", "cert", "key", "signing_key"}


def default_profile_path() -> Path:
    """``$SAFEROOM_PROFILE``, else ``$XDG_CONFIG_HOME/saferoom/profile.toml`` (``~/.config`` by default)."""
    if os.environ.get("SAFEROOM_PROFILE"):
        return Path(os.environ["SAFEROOM_PROFILE"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "saferoom" / "profile.toml"


@dataclass(frozen=True)
class Profile:
    """One user's connection settings."""

    name: str
    server: str
    ca: Path
    cert: Path
    key: Path
    signing_key: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Profile:
        path = path or default_profile_path()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidRequest(
                f"no profile at {path}: use --profile, or copy the directory from `saferoom certs issue` there"
            ) from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequest(f"cannot read the profile {path}: {exc}") from None
        unknown = set(data) - _KEYS
        missing = {"name", "server", "ca", "cert", "key"} - set(data)
        if unknown or missing or not all(isinstance(v, str) for v in data.values()):
            raise InvalidRequest(
                f"profile {path}: needs string values for name, server, ca, cert, key"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        base = path.parent
        return cls(
            name=data["name"],
            server=data["server"],
            ca=base / data["ca"],
            cert=base / data["cert"],
            key=base / data["key"],
            signing_key=base / data["signing_key"] if data.get("signing_key") else None,
        )

    def with_server(self, server: str | None = None) -> tuple[Profile, str]:
        """This profile aimed at the server to use (``server`` > ``$SAFEROOM_SERVER`` > the profile's own), and
        where that address came from: ``"flag"``, ``"env"`` or ``"profile"``."""
        if server:
            return replace(self, server=server), "flag"
        if os.environ.get(SERVER_ENV):
            return replace(self, server=os.environ[SERVER_ENV]), "env"
        return self, "profile"

    def credentials(self) -> grpc.ChannelCredentials:
        """Mutual-TLS channel credentials: trust only the deployment's authority, present the user's certificate."""
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.read_bytes(),
                private_key=self.key.read_bytes(),
                certificate_chain=self.cert.read_bytes(),
            )
        except OSError as exc:
            raise InvalidRequest(f"cannot read the profile's certificate files: {exc}") from None
