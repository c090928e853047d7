"""Every spelling of an address a tenant's URL must not reach (SSRF), and the rule that refuses it.

Shared by the webhook SSRF tests and the trust-boundary matrix for connectors.
"""

from __future__ import annotations

REFUSED = [
    ("http://a.example/h", "https"),                         # plain http in production
    ("https://127.0.0.1/h", "loopback"),
    ("https://2130706433/h", "loopback"),                    # decimal
    ("https://0177.0.0.1/h", "loopback"),                    # octal
    ("https://0x7f000001/h", "loopback"),                    # hex
    ("https://0x7f.1/h", "loopback"),                        # mixed short form
    ("https://127.1/h", "loopback"),
    ("https://localhost/h", "loopback"),
    ("https://LocalHost./h", "loopback"),
    ("https://api.localhost/h", "loopback"),
    ("https://[fe80::1%25eth0]/h", "link-local"),
    ("https://[::1]/h", "loopback"),
    ("https://10.1.2.3/h", "private"),
    ("https://172.16.0.1/h", "private"),
    ("https://192.168.1.1/h", "private"),
    ("https://[fc00::1]/h", "private"),
    ("https://[fec0::1]/h", "private site-local"),            # deprecated IPv6 site-local, fec0::/10
    ("https://100.64.0.1/h", "carrier-grade NAT"),
    ("https://100.127.255.254/h", "carrier-grade NAT"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[fe80::1]/h", "link-local"),
    ("https://224.0.0.1/h", "multicast"),
    ("https://[ff02::1]/h", "multicast"),
    ("https://0.0.0.0/h", "unspecified"),
    ("https://[::]/h", "unspecified"),
    ("https://240.0.0.1/h", "reserved"),
    ("https://[::ffff:127.0.0.1]/h", "loopback (IPv4 embedded"),
    ("https://[::ffff:a9fe:a9fe]/h", "link-local (IPv4 embedded"),  # ::ffff:169.254.169.254
    ("https://[64:ff9b::a00:1]/h", "private (IPv4 embedded"),       # NAT64 of 10.0.0.1
    ("https://[2002:c0a8:101::1]/h", "private (IPv4 embedded"),     # 6to4 of 192.168.1.1
    ("https://user:pw@a.example/h", "credentials"),
    ("https://999.1.1.1/h", "valid IP"),
]
