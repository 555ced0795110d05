"""Print the README's configuration table from the settings classes (python scripts/settings_table.py)."""

from __future__ import annotations

from services.settings import AggregatorSettings, MailerSettings


def table() -> str:
    rows = ["| variable | default | used by | meaning |", "|---|---|---|---|"]
    seen: set[str] = set()
    classes = ((AggregatorSettings, "aggregator"), (MailerSettings, "mailer"))
    for cls, _ in classes:
        for name, field in cls.model_fields.items():
            key = "TN_" + name.upper()
            if key in seen:
                continue
            seen.add(key)
            users = ", ".join(who for c, who in classes if name in c.model_fields)
            default = "" if field.default is None else field.default
            rows.append(f"| `{key}` | `{default}` | {users} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
