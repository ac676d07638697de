"""Background jobs that report to a page as they go (the Train page's run, the Teach page's fit): an event log
that the job appends to from its thread, and the server-sent-events stream that replays it to a browser."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import Request
from sse_starlette import EventSourceResponse, ServerSentEvent

EVENT_POLL_SECONDS = 0.2
FINAL_STATES = ("finished", "stopped", "failed")


class EventLog:
    """Numbered events (``{"id", "type", "data"}``) and a state; the last event, ``done``, comes with the final
    state. Written by the job's thread, read by any number of streams."""

    def __init__(self, state: str = "starting"):
        self.state = state
        self.events: list[dict] = []
        self._events_lock = threading.Lock()

    def publish(self, kind: str, data: dict) -> None:
        with self._events_lock:
            self.events.append({"id": len(self.events), "type": kind, "data": data})

    def finish(self, state: str, data: dict) -> None:
        """The last event and the final state together, so a reader that sees the state also sees the event."""
        with self._events_lock:
            self.events.append({"id": len(self.events), "type": "done", "data": {"state": state, **data}})
            self.state = state

    def events_since(self, index: int) -> list[dict]:
        with self._events_lock:
            return self.events[index:]

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


def event_stream(request: Request, job: EventLog | None, after: int = -1) -> EventSourceResponse:
    """Server-sent events of ``job`` from event ``after + 1`` on; a page that opens mid-job first receives the
    whole history (its curves start at the beginning), and a reconnecting EventSource (Last-Event-ID) resumes
    where it stopped. No job: one ``idle`` event. sse-starlette formats the events, sends a keep-alive comment
    every 15 s and ends the stream when the page goes away or the server shuts down (one Ctrl-C stops it)."""
    last_seen = request.headers.get("last-event-id", "")
    start = max(after + 1, int(last_seen) + 1 if last_seen.isdigit() else 0)

    async def stream():
        yield ServerSentEvent(retry=2000)
        if job is None:
            yield ServerSentEvent("{}", event="idle")
            return
        index = start
        while True:
            events = job.events_since(index)
            for event in events:
                # json.dumps, not sse-starlette's JSON events: those refuse NaN, which a diverged loss is
                yield ServerSentEvent(json.dumps(event["data"]), id=str(event["id"]), event=event["type"])
            index += len(events)
            if job.done and not job.events_since(index):
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)

    return EventSourceResponse(stream())
