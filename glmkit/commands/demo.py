"""`glmkit demo`: the demo's stages (glmkit/pipeline/demo.py) in a work folder, published whole at the end."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from glmkit.errors import GlmkitError
from glmkit.options import DemoOptions
from glmkit.pipeline.demo import DemoPipeline, Stage, report

log = logging.getLogger("glmkit")


def run_demo(outdir: str, options: DemoOptions = DemoOptions(), force: bool = False) -> list[Stage]:
    """Every stage into ``outdir``: built in its work folder (``.NAME.work``) and published whole at the end, so
    that --force keeps an earlier demo until the new one is complete; only a demo's folder is ever replaced."""
    from glmkit.io.files import claim_outputs, clear_work_folder, publish, remove, work_folder

    out = Path(outdir)
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()   # an empty folder made for the demo is as good as none
    if (out.exists() or out.is_symlink()) and not force:
        raise GlmkitError(f"{outdir}: folder exists and is not empty; use --force to replace an earlier demo")
    if (out.exists() or out.is_symlink()) and not _is_demo(out):
        raise GlmkitError(f"{outdir}: exists and is not a glmkit demo folder (no index.html of one); glmkit will not "
                          f"replace it: name another folder")
    with claim_outputs([outdir], force=True):
        work = work_folder(out)
        clear_work_folder(work)
        work.mkdir(parents=True)
        (work / "plan.txt").write_text("glmkit demo\n")   # marks the folder as glmkit's (clear_work_folder)
        stages: list[Stage] = []
        try:
            pipeline = DemoPipeline(work, options)
            for name, run in pipeline.stages():
                log.info(f"demo: {name}")
                started = time.perf_counter()
                output, figure, *learned = run()
                stages.append(Stage(name, output, figure, time.perf_counter() - started,
                                    ("yes" if learned[0] else "no") if learned else "-"))
            report(work, stages, options)
        except BaseException:   # nothing to resume: the next run starts over
            remove(work)
            raise
        (work / "plan.txt").unlink()
        publish(work, out)
    return stages


def _is_demo(folder: Path) -> bool:
    try:
        return folder.is_dir() and not folder.is_symlink() and \
            "<title>glmkit demo</title>" in (folder / "index.html").read_text()[:2000]
    except OSError:
        return False
