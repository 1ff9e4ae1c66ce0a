"""The keys that submit jobs for the selected head or checkpoint: `a` (ablate), `x` (screen)."""

from __future__ import annotations

from workbench.components.ablate import AblateDialog
from workbench.components.detail import HeadDetailScreen
from workbench.components.messages import JobSubmitted
from workbench.components.mono import ConfirmDialog


class JobActions:
    """WorkbenchApp's job submission: a dialog first, then one engine call."""

    def selected_head(self) -> tuple[int, int] | None:
        screen = self.screen
        if isinstance(screen, HeadDetailScreen):
            return screen.selected_head()
        pane_head = self.active_pane.selected_head()
        return pane_head or self.selected

    def action_ablate(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        hd = self.selected_head()
        if hd is None:
            self.notify("move the cursor to a head first (Heads or Map pane)", severity="warning")
            return
        name = self.checkpoint["name"]

        def done(params: dict | None) -> None:
            if params is not None:
                self.submit_job("ablate", params, f"ablate L{params['layer']}H{params['head']}")

        self.push_screen(AblateDialog(name, *hd), done)

    def action_screen_heads(self) -> None:
        if self.checkpoint is None:
            self.notify("no checkpoint loaded", severity="warning")
            return
        name = self.checkpoint["name"]

        def done(yes: bool | None) -> None:
            if yes:
                self.submit_job("screen", {"checkpoint": name}, f"screen {name}")

        # like `a`: a key that submits a job asks first
        self.push_screen(
            ConfirmDialog(
                f"[b]Screen {name}[/b]: score every head x relation in weight space "
                "(submits a job; results go to the user cache). enter submits, esc cancels.",
                "Screen",
            ),
            done,
        )

    def submit_job(self, kind: str, params: dict, what: str) -> None:
        def done(job: dict) -> None:
            self.notify(f"job {job.get('id', '?')} queued: {what}", title="jobs")
            self.post_message(JobSubmitted(job))

        self.engine_call(
            f"submit {kind}",
            lambda c: c.submit(kind, params),
            done,
            group=f"submit:{kind}",
            exclusive=False,
        )

    def on_job_submitted(self, event: JobSubmitted) -> None:
        self.poll_jobs()
