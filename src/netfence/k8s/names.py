"""The API server's format rules for names, label keys and values, and port names.

Each check returns a list of human-readable reasons (empty when valid), mirroring
`k8s.io/apimachinery/pkg/util/validation`, so that the same words reach the user whether
the problem is in a label, a selector or a metadata name.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")


def dns1123_label(value: str) -> list[str]:
    """A namespace name: lower-case alphanumerics and '-', at most 63 characters."""
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        problems.append(
            "must consist of lower case alphanumeric characters or '-', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def dns1123_subdomain(value: str) -> list[str]:
    """An object name (pods, policies): dot-separated DNS labels, at most 253 characters."""
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        problems.append(
            "must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return problems


def label_key(key: str) -> list[str]:
    """A qualified name with an optional DNS-subdomain prefix: `example.com/app`."""
    prefix, sep, name = key.rpartition("/")
    problems = []
    if sep and not prefix:
        problems.append("prefix part must be non-empty")
    elif sep:
        problems.extend("prefix part " + p for p in dns1123_subdomain(prefix))
    if not name:
        problems.append("name part must be non-empty")
    else:
        if len(name) > 63:
            problems.append("name part must be no more than 63 characters")
        if not _QUALIFIED_NAME.fullmatch(name):
            problems.append(
                "name part must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character"
            )
    return problems


def label_value(value: str) -> list[str]:
    """A label value: empty, or a qualified name part of at most 63 characters."""
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if value and not _QUALIFIED_NAME.fullmatch(value):
        problems.append(
            "a valid label value must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return problems


def port_name(value: str) -> list[str]:
    """An IANA service name, the only form a named port may take (e.g. `http`, `dns-tcp`)."""
    problems = []
    if len(value) > 15:
        problems.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.fullmatch(value):
        problems.append("must contain only lower-case alphanumeric characters and '-'")
    if not _HAS_LETTER.search(value):
        problems.append("must contain at least one letter (a-z)")
    if "--" in value:
        problems.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems
