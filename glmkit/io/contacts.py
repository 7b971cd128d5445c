"""Contact maps of `glmkit jacobian`: a plain .npy matrix, or a Zarr store that also says what each row is.

Zarr layout (schema glmkit.contacts version 1; docs/FORMATS.md is authoritative):

    contacts            float32 (L, L)   the symmetric map, diagonal 0
    positions/element   int32 (L)        element (record) number of each position, -1 for special/strand tokens
    positions/residue   int32 (L)        1-based residue within its element, 0 for special/strand tokens
    positions/token     string (L)       the position's token
    elements/name       string (E)       element (record) names
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.io.store import ColumnWriter, close_writers, create_store, finish_store, open_store

SCHEMA = "glmkit.contacts"


def write_contacts(path: Path, contacts: np.ndarray, query, parameters: dict, inputs: list) -> None:
    """``path`` is the temporary name of the output; the published name's suffix chooses the format."""
    if ".npy" in Path(path).name:
        with open(path, "wb") as fh:
            np.save(fh, contacts.astype(np.float32))
        return
    group = create_store(path, SCHEMA, parameters, inputs)
    L = len(contacts)
    writers = [ColumnWriter(group, "contacts", np.float32, max(1, L), (L,))]
    writers[0].extend(contacts.astype(np.float32))
    for name, values, dtype in (("positions/element", query.element, np.int32),
                                ("positions/residue", query.residue, np.int32),
                                ("positions/token", np.array(query.labels, object), str),
                                ("elements/name", np.array(query.element_names, object), str)):
        w = ColumnWriter(group, name, dtype)
        w.extend(values)
        writers.append(w)
    close_writers(writers)
    finish_store(group, attributes={"summary": {"positions": L, "elements": len(query.element_names)}})


def read_contacts(path: str | Path) -> np.ndarray:
    """The (L, L) map of a .npy file or a contacts store."""
    if str(path).endswith(".npy"):
        return np.load(path)
    return open_store(path, SCHEMA, required=("contacts",))["contacts"][:]
