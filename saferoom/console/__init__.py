"""``saferoom console``: a local web application that acts with its owner's mutual-TLS identity.

It listens on 127.0.0.1 only, prints a URL with a one-time token, and serves server-rendered pages for the
identity's roles (researcher, operator, output checker, auditor) with charts and maps drawn as SVG here; no
script, font or tile comes from anywhere else. Approvals and output-check decisions are signed here with the
profile's key (it never leaves the machine). ``security`` documents how other pages and sites are kept out.
"""

from saferoom.console.app import Console, create_app, profile_roles
from saferoom.console.serve import ConsoleServer

__all__ = ["Console", "ConsoleServer", "create_app", "profile_roles"]
