"""The keys that submit jobs: `a` (ablate the selected head) and `x` (screen the checkpoint).
A dialog first, then one engine call; the queued job comes back to the app as JobSubmitted."""

from __future__ import annotations

from textual.app import App

from workbench.components.ablate import AblateDialog
from workbench.components.confirm import ConfirmDialog
from workbench.services.engine import Engine
from workbench.services.messages import JobSubmitted


class JobRequests:
    def __init__(self, app: App[None], engine: Engine) -> None:
        self.app = app
        self.engine = engine

    def ablate(self, checkpoint: str, layer: int, head: int) -> None:
        def chosen(params: dict | None) -> None:
            if params is not None:
                self.submit("ablate", params, f"ablate L{params['layer']}H{params['head']}")

        self.app.push_screen(AblateDialog(checkpoint, layer, head), chosen)

    def screen(self, checkpoint: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.submit("screen", {"checkpoint": checkpoint}, f"screen {checkpoint}")

        # like `a`: a key that submits a job asks first
        self.app.push_screen(
            ConfirmDialog(
                f"[b]Screen {checkpoint}[/b]: score every head x relation in weight space "
                "(submits a job; results go to the user cache). enter submits, esc cancels.",
                "Screen",
            ),
            answered,
        )

    def submit(self, kind: str, params: dict, what: str) -> None:
        self.engine.call(
            self.app,
            f"submit {kind}",
            lambda c: c.submit(kind, params),
            lambda job: JobSubmitted(job, what),
            group=f"submit:{kind}",
            exclusive=False,
        )
