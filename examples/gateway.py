"""A gateway that pushes every change of a task store to browsers over WebSocket.

Run it next to the processes that write tasks (adapters, pollers, the CLI)::

    pip install 'uniqc-taskstore[examples]'
    UNIQC_TASKSTORE_URL=postgresql+psycopg://user@host/db uvicorn gateway:app --app-dir examples

(without ``UNIQC_TASKSTORE_URL`` it opens the SQLite store of ``UNIQC_CACHE_DIR`` or
``~/.uniqc/cache``) and open http://127.0.0.1:8000/: each change appears as it commits.

``/changes`` is the WebSocket: it first sends ``{"token": ...}``, where the feed starts
for this connection, then one JSON object per change (``task_id``, ``kind``, ``status``,
``changed_at``, ``token``). A client that reconnects with ``/changes?since=TOKEN`` (the
last token it handled) misses nothing in between. Each connection follows the feed on
its own: :meth:`TaskStore.changes` pages, :meth:`TaskStore.wait_for_changes` between
them (PostgreSQL wakes it by ``NOTIFY``; SQLite and MariaDB probe), in a worker thread
so the event loop never blocks.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from uniqc_taskstore import ChangesExpiredError, TaskStore

app = FastAPI(title="uniqc task changes")
store = TaskStore(create=False)

PAGE = """<!doctype html><meta charset="utf-8"><title>uniqc task changes</title>
<table><thead><tr><th>time<th>task<th>what<th>status</tr></thead><tbody id="rows"></tbody></table>
<script>
const socket = new WebSocket(`ws://${location.host}/changes`);
socket.onmessage = (event) => {
  const change = JSON.parse(event.data);
  if (!change.task_id) return;  // the first message: where the feed starts
  const row = document.getElementById("rows").insertRow(0);
  for (const key of ["changed_at", "task_id", "kind", "status"]) {
    row.insertCell().textContent = change[key] ?? "-";
  }
};
</script>"""


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/changes")
async def changes(socket: WebSocket, since: str | None = None) -> None:
    await socket.accept()
    closed = asyncio.ensure_future(_until_closed(socket))
    try:
        token = since or (await asyncio.to_thread(store.changes)).token
        await socket.send_json({"token": token})
        while not closed.done():
            page = await asyncio.to_thread(store.changes, token)
            for change in page:
                await socket.send_json(change.to_dict())
            token = page.token
            if not page.more:
                waiting = asyncio.ensure_future(
                    asyncio.to_thread(store.wait_for_changes, token, 1.0)
                )
                await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
    except ChangesExpiredError as exc:
        await socket.close(code=4410, reason=str(exc)[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass  # the browser went away
    finally:
        closed.cancel()


async def _until_closed(socket: WebSocket) -> None:
    """Return when the browser closes the connection (it sends nothing else)."""
    while (await socket.receive())["type"] != "websocket.disconnect":
        pass
