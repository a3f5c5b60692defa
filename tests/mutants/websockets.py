"""Chapter 5 (WebSockets): bugs in the game, the chat, the echo, the outbox, the frame checks and the client.

Most bugs here are one-line edits of the real code (``edit``), so the mutant is the code a developer
would have written. Two replace a function whole: the lock-step player and the relay that awaits
each member's write, which a developer would write as shown.
"""

import asyncio
import json
import time

import aiohttp

from mutants import Mutant, edit, swap

NOTEBOOK = "05_websockets"
SOCKETS = "labsupport.patterns.websocket"


def _lock_step(play):
    async def play_in_lock_step(base_url, *, inputs_per_s, duration, log):
        from labsupport.patterns.websocket import Message, ws_url
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(base_url, "/game")) as ws:
                period, due = 1.0 / inputs_per_s, time.monotonic()
                for n in range(1, int(inputs_per_s * duration) + 1):
                    due += period
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await ws.send_str(json.dumps({"n": n, "t": time.monotonic()}))
                    while True:  # the bug: the player waits for the state that answers its input
                        tick = json.loads((await ws.receive()).data)
                        log.append(Message("down", tick["tick"], tick["t"], time.monotonic()))
                        if tick["ack"] >= n:
                            break
    return play_in_lock_step


def _relaying_in_turn(on_message):
    async def relay_awaiting_each(self, message):
        self.hub.chat_seq += 1
        said = json.dumps({"seq": self.hub.chat_seq, "from": self.name, "text": str(message)})
        for member in list(self.hub.room):  # the bug: each member's write is awaited in turn, no outbox
            try:
                await member.write_message(said)
            except Exception:
                pass
    return relay_awaiting_each


MUTANTS = [
    # group 1: the accept GUID, the player, the chat's sender copy, the mask check, the echo, the outbox's
    # put, the feed client's cursor, the dead-peer server's settings
    Mutant("ws-accept-guid-typo", "the RFC's GUID is copied with one character wrong", NOTEBOOK,
           ("W1 handshake",),
           swap("labsupport.experiments.websocket:ACCEPT_GUID", lambda guid: guid[:-1] + "2"), group=1),
    Mutant("ws-player-lock-step", "the player waits for the state that answers each input before the next",
           NOTEBOOK, ("W2 inputs rate",), swap(f"{SOCKETS}:play", _lock_step), group=1),
    Mutant("ws-chat-sender-copy-direct", "the sender's own copy is written at once, past its outbox", NOTEBOOK,
           ("W2 chat one order",),
           swap(f"{SOCKETS}:ChatSocket.on_message", edit((
               "member.deliver(said)  # one string shared by every outbox",
               "member.write_message(said) if member is self else member.deliver(said)"))), group=1),
    Mutant("ws-mask-not-checked", "the frame check forgets the mask bit", NOTEBOOK, ("W3 unmasked refused",),
           swap("labsupport.patterns.rfc6455:FrameChecker.header", edit(("if not masked:", "if False:"))),
           group=1),
    Mutant("ws-echo-as-json", "the echo answers with send(), which JSON-encodes the message", NOTEBOOK,
           ("W3 frame bytes", "W5 others served"),
           swap(f"{SOCKETS}:EchoSocket.on_message", edit(("self.deliver(message)", "self.send(message)"))),
           group=1),
    Mutant("ws-outbox-false-after-drop", "put() returns False whenever it dropped a message, and the caller "
           "closes", NOTEBOOK, ("W5 drop-oldest stays",),
           swap(f"{SOCKETS}:Outbox.put", edit(("return True", "return not self.dropped"))), group=1),
    Mutant("ws-follow-forgets-cursor", "the client reconnects to /feed without ?after=", NOTEBOOK,
           ("W5 resume after cut",),
           swap(f"{SOCKETS}:follow", edit(('"/feed" + ("" if cursor is None else f"?after={cursor}")',
                                          '"/feed"'))), group=1),
    Mutant("ws-ping-timeout-not-passed", "the server is started without websocket_ping_timeout, so it "
           "checks for the pong only when the next ping is due", NOTEBOOK,
           ("W5 dead peer found", "W5 q2 dead peer"),
           swap("labsupport.experiments.websocket_faults:run_dead_peer",
                edit(("websocket_ping_timeout=ping_timeout)", ")"))), group=1),

    # group 2: the player's connection, the game's link, the chat's relay, the pong opcode, the outbox's
    # writer, the UTF-8 check
    Mutant("ws-player-two-connections", "the player sends its inputs on a second connection", NOTEBOOK,
           ("W2 one connection",),
           swap(f"{SOCKETS}:play", edit(("await ws.send_str(json.dumps({\"n\": n, \"t\": time.monotonic()}))",
                                         "await inputs.send_str(json.dumps({\"n\": n, \"t\": time.monotonic()}))"),
                                        ("reader = asyncio.create_task(read_ticks())",
                                         "inputs = await session.ws_connect(ws_url(base_url, \"/game\"))\n"
                                         "reader = asyncio.create_task(read_ticks())"),
                                        ("reader.cancel()", "reader.cancel()\nawait inputs.close()"))), group=2),
    Mutant("ws-game-link-undelayed", "the game's meter is started without the link's delay", NOTEBOOK,
           ("W2 crossings",),
           swap("labsupport.experiments.websocket:run_game", edit((
               'metered(websocket_server("ws-game", hub), latency, capture=0)',
               'metered(websocket_server("ws-game", hub), capture=0)'))), group=2),
    Mutant("ws-chat-skips-sender", "the relay skips the sender: it knows what it said", NOTEBOOK,
           ("W2 chat heard all",),
           swap(f"{SOCKETS}:ChatSocket.on_message", edit((
               "member.deliver(said)  # one string shared by every outbox",
               "if member is not self:\n    member.deliver(said)"))), group=2),
    Mutant("ws-pong-reserved", "the reserved control opcodes are written from 0xA, so a pong is refused",
           NOTEBOOK, ("W5 live peer kept",),
           swap("labsupport.patterns.rfc6455:RESERVED_OPCODES", lambda reserved: reserved | {0xA}), group=2),
    Mutant("ws-outbox-write-not-awaited", "the outbox's writer does not await write_message", NOTEBOOK,
           ("W5 backlog grows", "W5 drop-oldest sheds", "W5 close 1013"),
           swap(f"{SOCKETS}:OutboxSocket._write_outbox", edit((
               "await self.write_message(message, binary=isinstance(message, bytes))",
               "self.write_message(message, binary=isinstance(message, bytes))"))), group=2),
    Mutant("ws-text-not-decoded", "the frame check leaves text to Tornado", NOTEBOOK, ("W5 bad input codes",),
           swap("labsupport.patterns.rfc6455:ClientFrames.header_read", edit((
               "if not checker.control and checker.opcode == TEXT and not checker.compressed:",
               "if False:"))), group=2),

    # group 3: the game's ticks, the outbox's limit and its writer's wake-up, the chat's relay
    Mutant("ws-game-state-per-input", "the server also answers each input with the state at once",
           NOTEBOOK, ("W2 ticks rate",),
           swap(f"{SOCKETS}:GameSocket.on_message", edit((
               "self.hub.inputs.append((move[\"n\"], move[\"t\"], time.monotonic()))",
               "self.hub.inputs.append((move[\"n\"], move[\"t\"], time.monotonic()))\n"
               "self.send({\"tick\": move[\"n\"], \"ack\": move[\"n\"], \"t\": time.monotonic()})"))),
           group=3),
    Mutant("ws-outbox-off-by-one", "the outbox is full only past its limit", NOTEBOOK, ("W5 bound held",),
           swap(f"{SOCKETS}:Outbox._full", edit(("len(self.queue) >= self.limit", "len(self.queue) > self.limit"))),
           group=3),
    Mutant("ws-chat-relay-awaits-writes", "the relay awaits each member's write in turn", NOTEBOOK,
           ("W5 talker unaffected",), swap(f"{SOCKETS}:ChatSocket.on_message", _relaying_in_turn), group=3),
    Mutant("ws-outbox-polls-5ms", "the outbox's writer looks for messages every 5 ms instead of being woken",
           NOTEBOOK, ("W4 loopback", "W4 20 ms link"),
           swap(f"{SOCKETS}:Outbox.get", edit(("self._nonempty.clear()", "await asyncio.sleep(0.005)"),
                                               ("await self._nonempty.wait()", "continue"))), group=3),
]
