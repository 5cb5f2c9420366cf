"""The transcript of a session (DESIGN §5, LangBot's host semantics).

Rules (each turn's ``seq_from`` / ``seq_to`` span the events it came from; ``time`` is
the time of its first event; order a transcript by ``seq_from``):

* User turns, id = the command's event id, status ``complete``: ``command.ask`` and
  ``command.steer`` (content = the text, list parts joined by newlines; ``data`` keeps
  ``parts`` and ``attachments``) and ``command.resume`` with reason ``user_reply``
  (content = the written ``content``, else the ``answer`` itself when it is a string,
  else the answer as JSON; ``data`` keeps ``question_id``, ``answer``, ``parts``). Asks of
  child runs are turns too: the transcript is the audit of everything said in the session.
* A reply answers the question ``question:<run_id>:<question_id>`` if it is still
  ``asked`` and its run has not ended: status ``answered``, ``data`` gains ``answer``,
  ``answer_text`` and ``answer_turn_id``, ``seq_to`` moves to the reply. Later replies
  are turns of their own but leave the question as first answered.
* One assistant turn per run, ``assistant:<run_id>``, status ``streaming`` until the run's
  first terminal event. ``message.delta`` creates it and appends its text in seq order.
  The first ``message.completed`` with role ``assistant`` replaces the text; later deltas
  and completed messages of the run are ignored (``data.source`` says which event the text
  is from). ``run.completed`` with ``content`` does the same when no message completed
  (it is the run's final answer), creating the turn if the run had none. The terminal
  event sets the status: ``complete``, ``failed`` (also for dead-lettered runs) or
  ``cancelled``. Message events after the run ended do not change the transcript.
* ``run.asked_user`` adds the question turn (role ``question``, status ``asked``, content
  = the prompt, ``data`` = ``question_id``, ``answer_schema``, ``timeout_s``).
* ``artifact.created`` adds ``artifact:<event id>`` (content = the artifact's name, else
  ``"<artifact_type> <artifact_id>"``); ``data`` has the ref and metadata but never the
  inline base64 content, which stays in the EventLog.
* A turn id that already exists (an event id seen before) is never created twice.
"""

from __future__ import annotations

import json
from typing import Any, Final, cast

from eventstore.catalog import ArtifactCreated, RunAskedUser
from eventstore.envelope import Event
from projections.fold_state import (
    FoldState,
    artifact_turn_id,
    assistant_turn_id,
    question_turn_id,
)
from projections.rows import TERMINAL_STATUSES, RunRow, TranscriptRow, TurnStatus

FINAL_SOURCES: Final = frozenset({"message.completed", "run.completed"})
"""``data.source`` of an assistant turn whose text no longer takes deltas."""

TURN_STATUS_OF_RUN: Final[dict[str, TurnStatus]] = {
    "completed": "complete",
    "failed": "failed",
    "cancelled": "cancelled",
    "dead_lettered": "failed",
}


def text_of(content: Any) -> str:
    """The text of dumped content (``content_text`` for JSON): a string, or the text
    parts of a list joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("text") is not None)


def _parts_of(content: Any) -> list[Any]:
    return content if isinstance(content, list) else []


def _user_turn(
    state: FoldState, seq: int, event: Event, *, content: str, run_id: str | None, data: Any
) -> None:
    if state.peek_turn(event.id) is not None:
        return
    state.add_turn(
        TranscriptRow(
            turn_id=event.id,
            session_id=event.session_id or "",
            role="user",
            kind=event.type,
            content=content,
            status="complete",
            seq_from=seq,
            seq_to=seq,
            time=event.time,
            run_id=run_id,
            data=data,
        )
    )


def on_user_message(state: FoldState, seq: int, event: Event, data: dict[str, Any]) -> None:
    """``command.ask`` / ``command.steer``."""
    content = data["content"]
    run_id = data.get("target_run_id") or event.run_id
    extra = {"parts": _parts_of(content), "attachments": data["attachments"]}
    _user_turn(state, seq, event, content=text_of(content), run_id=run_id, data=extra)


def on_user_reply(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow | None
) -> None:
    """``command.resume`` with reason ``user_reply``; ``run`` is the run it resumes."""
    answer = data["answer"]
    if data["content"] is not None:
        text = text_of(data["content"])
    elif answer is None or isinstance(answer, str):
        text = answer or ""
    else:
        text = json.dumps(answer, ensure_ascii=False)
    question_id = data["question_id"]
    extra = {"question_id": question_id, "answer": answer, "parts": _parts_of(data["content"])}
    _user_turn(state, seq, event, content=text, run_id=event.run_id, data=extra)
    if run is None or run.status in TERMINAL_STATUSES:
        return
    turn_id = question_turn_id(run.run_id, question_id)
    question = state.peek_turn(turn_id)
    if question is None or question.status != "asked":
        return
    question = state.edit_turn(turn_id)
    if question is None:
        return
    question.status = "answered"
    question.seq_to = seq
    question.data = {
        **(question.data or {}),
        "answer": answer,
        "answer_text": text,
        "answer_turn_id": event.id,
    }


def _assistant_turn(state: FoldState, seq: int, event: Event, run: RunRow) -> TranscriptRow:
    turn_id = assistant_turn_id(run.run_id)
    turn = state.edit_turn(turn_id)
    if turn is None:
        turn = TranscriptRow(
            turn_id=turn_id,
            session_id=event.session_id or run.session_id,
            role="assistant",
            kind=event.type,
            content="",
            status="streaming",
            seq_from=seq,
            seq_to=seq,
            time=event.time,
            run_id=run.run_id,
            # Deltas until a whole message replaces them (_finalize_text).
            data={"source": "message.delta"},
        )
        state.add_turn(turn)
    return turn


def _is_final(turn: TranscriptRow) -> bool:
    return isinstance(turn.data, dict) and turn.data.get("source") in FINAL_SOURCES


def on_delta(state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow) -> None:
    if run.status in TERMINAL_STATUSES:
        return
    turn = _assistant_turn(state, seq, event, run)
    if _is_final(turn):
        return
    turn.seq_to = seq
    state.append_text(turn, data["text"])


def on_message_completed(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow
) -> None:
    if data["role"] != "assistant" or run.status in TERMINAL_STATUSES:
        return
    turn = _assistant_turn(state, seq, event, run)
    if _is_final(turn):
        return
    _finalize_text(state, turn, seq, event.type, data["content"])


def _finalize_text(
    state: FoldState, turn: TranscriptRow, seq: int, source: str, content: Any
) -> None:
    state.replace_text(turn, text_of(content))
    turn.data = {"source": source, "parts": _parts_of(content)}
    turn.seq_to = seq


def on_run_ended(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow
) -> None:
    """The run's first terminal event closes its assistant turn (``run.status`` is the
    new terminal status)."""
    turn_id = assistant_turn_id(run.run_id)
    final_content = data["content"] if event.type == "run.completed" else None
    if state.peek_turn(turn_id) is None:
        if final_content is None:
            return
        turn = _assistant_turn(state, seq, event, run)
    else:
        edited = state.edit_turn(turn_id)
        if edited is None:
            return
        turn = edited
    if final_content is not None and not _is_final(turn):
        _finalize_text(state, turn, seq, event.type, final_content)
    turn.status = TURN_STATUS_OF_RUN[run.status]
    turn.seq_to = seq


def on_asked_user(state: FoldState, seq: int, event: Event, run: RunRow) -> None:
    data = cast(RunAskedUser, event).data
    turn_id = question_turn_id(run.run_id, data.question_id)
    if state.peek_turn(turn_id) is not None:
        return
    state.add_turn(
        TranscriptRow(
            turn_id=turn_id,
            session_id=event.session_id or run.session_id,
            role="question",
            kind=event.type,
            content=data.prompt,
            status="asked",
            seq_from=seq,
            seq_to=seq,
            time=event.time,
            run_id=run.run_id,
            data={
                "question_id": data.question_id,
                "answer_schema": data.answer_schema,
                "timeout_s": data.timeout_s,
            },
        )
    )


def on_artifact(
    state: FoldState, seq: int, event: Event, data: dict[str, Any], run: RunRow
) -> None:
    turn_id = artifact_turn_id(event.id)
    if state.peek_turn(turn_id) is not None:
        return
    artifact = cast(ArtifactCreated, event).data
    state.add_turn(
        TranscriptRow(
            turn_id=turn_id,
            session_id=event.session_id or run.session_id,
            role="artifact",
            kind=event.type,
            content=artifact.name or f"{artifact.artifact_type} {artifact.artifact_id}",
            status="complete",
            seq_from=seq,
            seq_to=seq,
            time=event.time,
            run_id=run.run_id,
            data={
                "artifact_id": artifact.artifact_id,
                "artifact_type": artifact.artifact_type,
                "name": artifact.name,
                "mime_type": artifact.mime_type,
                "size": artifact.size,
                "inline": artifact.content_base64 is not None,
                "ref": data["ref"],
                "metadata": data["metadata"],
            },
        )
    )


__all__ = [
    "FINAL_SOURCES",
    "on_artifact",
    "on_asked_user",
    "on_delta",
    "on_message_completed",
    "on_run_ended",
    "on_user_message",
    "on_user_reply",
    "text_of",
]
