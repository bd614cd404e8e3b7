#!/usr/bin/env bash
# Regenerates the configuration table in README.md (between the config
# markers) and .env.example from the binary's own flag definitions.
# cli/tests/docs.rs fails when they drift; run this to fix them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
table="$(cargo run -q --example config_table)"
TABLE="$table" python3 - <<'PY'
import os, re
table = os.environ["TABLE"]
readme = open("README.md").read()
readme = re.sub(r"(<!-- config:begin -->\n).*?(<!-- config:end -->)", lambda m: m.group(1) + table + "\n" + m.group(2), readme, flags=re.S)
open("README.md", "w").write(readme)
out = ["# Every setting tokenusage reads, with its default. Copy to .env and edit.",
       "# Secrets (DATABASE_URL, TOKENUSAGE_JWT_SECRET, KAFKA_OPTIONS, keys, passwords) are never logged.", ""]
for line in table.splitlines()[2:]:
    name, default, help_ = [p.strip() for p in line.strip().strip("|").split(" | ", 2)]
    name, default = name.strip("`"), default.strip("`")
    out.append("# " + help_.replace("\\|", "|"))
    out.append(("# " if default == "—" else "") + name + "=" + ("" if default == "—" else default))
    out.append("")
open(".env.example", "w").write("\n".join(out))
PY
say "README.md and .env.example updated"
