"""A real ipykernel driven the way a front end drives it: cells over the shell channel and
widget clicks as comm messages, so a test sees what a user's click does while a cell runs."""

from __future__ import annotations

import time

from jupyter_client.manager import start_new_kernel


class KernelSession:
    def __init__(self, cwd: str) -> None:
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=cwd)

    def submit(self, code: str) -> str:
        """Send a cell without waiting; returns its message id."""
        return self.client.execute(code)

    def collect(self, msg_id: str, timeout: float = 300) -> str:
        """Text the cell printed (errors included) once it has finished."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append("ERROR " + content["ename"] + ": " + content["evalue"])
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def run(self, code: str, timeout: float = 300) -> str:
        return self.collect(self.submit(code), timeout)

    def value(self, expression: str) -> str:
        return self.run(f"print({expression})").strip()

    def click(self, model_id: str) -> None:
        """What a browser sends when a button is clicked."""
        message = self.client.session.msg("comm_msg", {
            "comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}})
        self.client.shell_channel.send(message)

    def wait_for(self, expression: str, timeout: float = 300, every: float = 0.5,
                 diagnose: str = "None") -> str:
        """Poll until ``expression`` (Python in the kernel) prints True; on a timeout the
        failure shows ``diagnose`` evaluated in the kernel."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.value(expression) == "True":
                return "True"
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {expression!r}: {self.value(diagnose)}")

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
