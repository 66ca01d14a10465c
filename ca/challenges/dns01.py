"""The dns-01 validator (RFC 8555 §8.4).

The CA looks up TXT records at `_acme-challenge.<domain>` through its own `Resolver` and
passes the challenge when any one of them equals base64url(SHA-256(key authorization)).
Several records may coexist, e.g. while a wildcard and its base name validate at once.
For a wildcard identifier the `*.` label is removed first (§8.4: the validation name is
the base domain).

Problem classes: `DNS` for failed look-ups (NXDOMAIN, no TXT record, timeout, SERVFAIL),
`IncorrectResponse` when TXT records exist but none matches, `RejectedIdentifier` for an
identifier type dns-01 cannot validate.
"""

from __future__ import annotations

from ca.challenges import ValidationRequest, ValidationResult, dns01_txt_value
from ca.challenges.resolver import Resolver
from ca.identifiers import IdentifierType
from ca.problems import IncorrectResponse, RejectedIdentifier

_PREFIX = "_acme-challenge."


class Dns01Validator:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def validate(self, request: ValidationRequest) -> ValidationResult:
        identifier = request.identifier
        if identifier.type is not IdentifierType.DNS:
            raise RejectedIdentifier(f"dns-01 cannot validate the identifier {identifier}")
        domain = identifier.value.removeprefix("*.")
        name = _PREFIX + domain
        records = await self.resolver.txt(name)
        if dns01_txt_value(request.key_authorization) not in records:
            shown = ", ".join(repr(r[:64]) for r in records[:3]) + (", …" if len(records) > 3 else "")
            raise IncorrectResponse(f"none of the {len(records)} TXT record(s) at {name} equals the "
                                    f"expected digest of the key authorization; received {shown}")
        return ValidationResult({"hostname": domain, "txtQuery": name})
