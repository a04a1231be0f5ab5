"""Micro-benchmark of the HBONE framing: 1 GiB of DATA from a client H2Connection to a server one.

Not collected by pytest (no `test_` prefix). Run it to compare framing changes:

    .venv/bin/python tests/unit/ztunnel/hbone/bench_framing.py [--gib 1] [--streams 1] [--chunk 65536]
        [--read 65536] [--frame-size 16384]

Everything is in memory, so this measures only our framing and flow control: the sender offers
`--chunk`-byte buffers (a socket read's worth) round-robin over `--streams` streams; the receiver is
fed `--read`-byte slices of the wire (0: each output blob whole, frame-aligned), acknowledges every
DataReceived at once, and its WINDOW_UPDATEs go back to the sender. Prints MB/s (10^6 bytes/s).
Each byte is copied once as a socket write would (`data_to_send`) and, with `--read`, once more as a
socket read would; the rest is framing and flow control.
"""

from __future__ import annotations

import argparse
import time

from ztunnel.hbone import DataReceived, H2Connection, H2Settings, RequestReceived


def run(total: int, streams: int, chunk: int, read: int, frame_size: int) -> float:
    settings = H2Settings(max_frame_size=frame_size)
    client, server = H2Connection(client=True, settings=settings), H2Connection(client=False, settings=settings)
    ids = [client.open_stream(f"10.0.0.{i % 250 + 1}:8080") for i in range(streams)]
    for ev in server.receive_data(client.data_to_send()):
        if isinstance(ev, RequestReceived):
            server.respond(ev.stream_id, 200)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())

    payload = bytes(range(256)) * (chunk // 256)
    carry = b""  # wire bytes short of a full --read, kept for the next round
    sent = received = 0
    turn = 0
    start = time.perf_counter()
    while received < total:
        if sent < total:
            for _ in range(streams):
                sid = ids[turn % streams]
                turn += 1
                sent += client.send_data(sid, payload[: min(chunk, total - sent)])
        wire = client.data_to_send()  # copy 1: what a socket write would copy into the kernel
        pieces: list[bytes] = []
        if read and wire:
            # copy 2: socket reads of --read bytes that ignore frame boundaries (a carry between rounds)
            view = memoryview(wire)
            pos = 0
            if carry:
                pos = read - len(carry)
                pieces.append(b"".join((carry, view[:pos])))
            while len(wire) - pos >= read:
                pieces.append(bytes(view[pos : pos + read]))
                pos += read
            carry = bytes(view[pos:])
            if sent >= total and carry:
                pieces.append(carry)
                carry = b""
        elif wire:
            pieces.append(wire)
        for piece in pieces:
            for ev in server.receive_data(piece):
                if type(ev) is DataReceived:
                    received += len(ev.data)
                    server.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
        back = server.data_to_send()
        if back:
            client.receive_data(back)
    elapsed = time.perf_counter() - start
    return total / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--read", type=int, default=65536, help="server read size; 0 = frame-aligned blobs")
    parser.add_argument("--frame-size", type=int, default=16384)
    args = parser.parse_args()
    total = int(args.gib * 2**30)
    mbps = run(total, args.streams, args.chunk, args.read, args.frame_size)
    print(
        f"{total / 2**30:.2f} GiB, {args.streams} stream(s), chunk {args.chunk}, read {args.read or 'aligned'}, "
        f"frame {args.frame_size}: {mbps:,.0f} MB/s"
    )


if __name__ == "__main__":
    main()
