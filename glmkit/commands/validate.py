"""`glmkit validate`: prove that stores are whole, chunk by chunk.

Each store's manifest (written when it was finished) says which arrays, of
what shape, with how many chunks and bytes; every chunk carries a crc32c. This
reads every chunk and checks it, then checks what the schema promises (offset
tables start at 0, never decrease, end at their data). One line per store on
stdout; a damaged store makes the command fail naming the first problem.
"""

from __future__ import annotations

import logging
from typing import Sequence

from glmkit.errors import GlmkitError
from glmkit.io.store import validate_store

log = logging.getLogger("glmkit")


def run_validate(stores: Sequence[str]) -> list[dict]:
    results, problems = [], []
    for path in stores:
        try:
            found = validate_store(path)
        except GlmkitError as e:
            problems.append(str(e))
            print(f"{path}\tdamaged\t{e}", flush=True)
            results.append({"path": path, "ok": False, "problem": str(e)})
            continue
        print(f"{path}\tok\t{found['schema']}\t{found['arrays']} arrays, {found['chunks']:,} chunks, "
              f"{found['bytes']:,} bytes", flush=True)
        log.info(f"validate: {path}: whole ({found['chunks']:,} chunks, {found['bytes'] / 1e6:,.1f} MB checked "
                 f"in {found['seconds']:.2f} s)")
        results.append({"path": path, "ok": True, **found})
    if problems:
        more = f" (and {len(problems) - 1} more damaged store{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise GlmkitError(problems[0] + more)
    return results
