"""Print the README's configuration table from the settings classes (python scripts/settings_table.py)."""

from __future__ import annotations

import json

from services.settings import AggregatorSettings, FormrSettings, MailerSettings


def table() -> str:
    rows = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    seen: set[str] = set()
    classes = ((AggregatorSettings, "aggregator"), (MailerSettings, "mailer"), (FormrSettings, "formr"))
    for cls, _ in classes:
        for name, field in cls.model_fields.items():
            key = "TN_" + name.upper()
            if key in seen:
                continue
            seen.add(key)
            users = ", ".join(who for c, who in classes if name in c.model_fields)
            value = field.get_default(call_default_factory=True)
            default = "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else value
            rows.append(f"| `{key}` | `{default}` | {users} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
