"""glmkit.resources: the launcher's environment read tolerantly."""

import pytest

from glmkit.errors import GlmkitUsageError
from glmkit.resources import launcher_int


def test_launcher_variables_unset_empty_or_numbers(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert launcher_int("LOCAL_WORLD_SIZE", 1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")   # an empty export in a job script: as unset
    assert launcher_int("LOCAL_WORLD_SIZE", 1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", " 4 ")
    assert launcher_int("LOCAL_WORLD_SIZE", 1) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "-1")
    with pytest.raises(GlmkitUsageError, match="LOCAL_WORLD_SIZE='-1' in the environment is not a number"):
        launcher_int("LOCAL_WORLD_SIZE", 1)
