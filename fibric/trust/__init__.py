"""The installation/tenant line: connector catalog, egress allowlist, and what each origin may declare.

Everything that decides whether something a tenant declared may start a
process, reach a private address or read a server variable lives in this
package (docs/security.md); the rest of Fibric asks it.
"""

from fibric.trust.boundary import Boundary, Grant, NotPermitted, Origin, secret_refs
from fibric.trust.catalog import Catalog
from fibric.trust.egress import ANYWHERE, PUBLIC, Egress, GuardedBackend, GuardedBackend2, Refused
from fibric.trust.resolver import Resolver

__all__ = [
    "ANYWHERE",
    "PUBLIC",
    "Boundary",
    "Catalog",
    "Egress",
    "Grant",
    "GuardedBackend",
    "GuardedBackend2",
    "NotPermitted",
    "Origin",
    "Refused",
    "Resolver",
    "secret_refs",
]
