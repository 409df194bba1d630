"""Field-name conversions between Bitrix24's UPPER_CASE storage names and camelCase.

Standard fields: ``ASSIGNED_BY_ID`` -> ``assignedById``. User fields ``UF_CRM_<n>_<rest>``:
only digits or only letters after the type number convert regularly (``UF_CRM_10_5186744711``
-> ``ufCrm10_5186744711``, ``UF_CRM_3_DIGIT`` -> ``ufCrm3Digit``); mixed letters and digits, or
no type number, only change the prefix (``UF_CRM_3_DIGIT10`` -> ``ufCrm_3_DIGIT10``,
``UF_CRM_1747309879`` -> ``ufCrm_1747309879``).
"""

import re

_UF_TYPED = re.compile(r"^UF_CRM_(\d+)_(.+)$")
_DIGITS = re.compile(r"^\d+(?:_\d+)*$")
_LETTERS = re.compile(r"^[A-Z]+(?:_[A-Z]+)*$")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def upper_to_camel(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def camel_to_upper(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).upper()


def uf_to_camel(name: str) -> str:
    typed = _UF_TYPED.match(name)
    if typed is not None:
        number, rest = typed.groups()
        if _DIGITS.match(rest):
            return f"ufCrm{number}_{rest}"
        if _LETTERS.match(rest):
            return f"ufCrm{number}" + "".join(part.capitalize() for part in rest.split("_"))
        return f"ufCrm_{number}_{rest}"
    if name.startswith("UF_CRM_"):
        return "ufCrm_" + name.removeprefix("UF_CRM_")
    return upper_to_camel(name)
