"""Chapter 9 exercises: quorum arithmetic, ids that survive a failover, sizing the gateways."""

from __future__ import annotations

import math

from ..checks import Exercise, Measurement
from ..experiments.scaling_faults import run_quorum_loss

# -- q1: how many nodes may fail? -------------------------------------------------------------

Q1_NODES = 5
Q1_ANSWER = (Q1_NODES - 1) // 2   # a majority of 5 is 3, so 2 may be down
Q1_ATTEMPTS = 3                   # publishes tried while nodes are down


def _check_failures(n) -> tuple[bool, str]:
    n = int(n)
    majority = Q1_NODES // 2 + 1
    if n == Q1_ANSWER:
        return True, (f"with {n} down, {Q1_NODES - n} remain: still a majority ({majority} of {Q1_NODES}), "
                      f"so a leader can be elected and every publish acknowledged. One more and there is none.")
    if n > Q1_ANSWER:
        return False, f"with {n} down only {Q1_NODES - n} remain, fewer than a majority ({majority}): nothing is acknowledged."
    return False, f"the cluster survives more than {n}: a majority of {Q1_NODES} is {majority}."


q1 = Exercise(
    "Q1 · a five-node cluster",
    checker=_check_failures,
    hint="A replicated stream acknowledges a publish once a majority of its replicas stored it. What is a majority of 5?",
    solution=f"A majority of {Q1_NODES} is {Q1_NODES // 2 + 1}, so {Q1_ANSWER} nodes may be down at once. In general "
             "2f + 1 nodes survive f failures: 3 nodes survive 1, 5 survive 2. An even count buys nothing: 4 nodes "
             "also survive only 1.",
    answer=Q1_ANSWER,
    measure=lambda: _measure_quorum(),
)


def _measure_quorum() -> Measurement:
    """The lab's cluster has three nodes: the same rule says it survives one failure, not two. Try both."""
    runs = {down: run_quorum_loss(attempts=Q1_ATTEMPTS, down=down) for down in (1, 2)}
    acked = [runs[down]["acked_while_down"] for down in (1, 2)]
    return Measurement(
        claim="a replicated stream acknowledges a publish only while a majority of its nodes is up: "
              "3 nodes survive 1 failure, not 2",
        theory=f"{Q1_ANSWER} of {Q1_NODES} nodes may fail (on this lab's 3 nodes: 1)",
        measured=f"on 3 nodes, with 1 follower killed {acked[0]} of {Q1_ATTEMPTS} publishes were acknowledged; "
                 f"with 2 killed, {acked[1]} of {Q1_ATTEMPTS}",
        # with one follower down every publish is acknowledged, but the first may be sent on the
        # producer's connection to the killed node and wait out its 0.5 s timeout
        id="X3 majority rule", value=acked, expected=[Q1_ATTEMPTS, 0], low=[Q1_ATTEMPTS - 1, 0],
        high=[Q1_ATTEMPTS, 0], unit="publishes acknowledged",
        how="The chapter's three-node cluster: followers of the stream's leader killed, three publishes tried, "
            "the nodes brought back.",
    )


# -- q2: resume on another gateway --------------------------------------------------------------

def _model_resume(seen: list[str]) -> str:
    return seen[-1] if seen else ""


Q2_LIFE = "9a41c07e"   # the stream's life: the first part of every id, alike on every gateway


def _check_resume(resume) -> tuple[bool, str]:
    if not callable(resume):
        return False, "the answer should be a function resume(seen) that returns the Last-Event-ID to send."
    for numbers in ((), (41,), (39, 40, 41), (7, 8, 9, 10, 11, 12)):
        seen = [f"{Q2_LIFE}-{n}" for n in numbers]
        want, got = _model_resume(seen), resume(list(seen))
        if got != want:
            repeats = isinstance(got, str) and got in seen
            return False, (f"after seeing {seen} it sends {got!r}; the gateway would then send "
                           + ("the events after it again (duplicates)." if repeats else "the wrong events, or none."))
    return True, ("the next gateway sends every event after that id. It can, because the id is the stream's: its life "
                  "and its sequence number, the same on every gateway. Like EventSource, the client sends the id as it "
                  "got it, without reading it.")


q2 = Exercise(
    "Q2 · where to resume",
    checker=_check_resume,
    hint="The gateway sends every event *after* the id you give it. Which id makes it send nothing twice and skip "
         "nothing? An id is text: the largest string is not the newest event.",
    solution="def resume(seen):\n    return seen[-1] if seen else ''\n"
             "The last id seen (a stream delivers in order), sent back as it came, as EventSource does. An empty "
             "string means 'send no Last-Event-ID': start from now.",
    answer=_model_resume,
)

# -- q3: how many gateway machines? -------------------------------------------------------------

Q3 = {"clients": 1_000_000, "rate": 1.0, "cpu_ms_per_delivery": 0.05, "kb_per_connection": 20.0,
      "cores": 8, "memory_gb": 16}
Q3_CPU = Q3["clients"] * Q3["rate"] * Q3["cpu_ms_per_delivery"] / 1000 / Q3["cores"]
Q3_MEMORY = Q3["clients"] * Q3["kb_per_connection"] * 1000 / 1e9 / Q3["memory_gb"]
Q3_ANSWER = math.ceil(max(Q3_CPU, Q3_MEMORY) - 1e-9)


def _check_machines(n) -> tuple[bool, str]:
    n = int(n)
    if n == Q3_ANSWER:
        return True, (f"CPU needs {Q3_CPU:.2f} machines and memory {Q3_MEMORY:.2f}: the larger one decides, "
                      f"rounded up to {n}. Add one for a gateway to fail without overloading the rest.")
    if n == math.ceil(Q3_MEMORY):
        return False, "that is what memory alone needs. Does CPU need more?"
    return False, "work out the cores and the memory the clients need, and divide each by one machine's."


q3 = Exercise(
    "Q3 · gateways for a million clients",
    checker=_check_machines,
    hint="Cores: clients × events per second × CPU seconds per delivery. Memory: clients × memory per connection. "
         "Divide each by one machine's, take the larger, round up.",
    solution=f"Cores: {Q3['clients']:,} × {Q3['rate']:g}/s × {Q3['cpu_ms_per_delivery']} ms = "
             f"{Q3_CPU * Q3['cores']:.0f} cores, {Q3_CPU:.2f} machines of {Q3['cores']}. Memory: {Q3['clients']:,} × "
             f"{Q3['kb_per_connection']:g} kB = {Q3_MEMORY * Q3['memory_gb']:.0f} GB, {Q3_MEMORY:.2f} machines of "
             f"{Q3['memory_gb']} GB. The larger, rounded up: {Q3_ANSWER}.",
    answer=Q3_ANSWER,
)

EXERCISES = [q1, q2, q3]

# q4 and q5 change a producer and a client, and run them on the real broker and gateways.
from .ch09_code import q4, q5  # noqa: E402

EXERCISES += [q4, q5]
