#!/usr/bin/python3
"""HTTP/2 peer for http2_interop_test.cc, on python3-h2 (an implementation not written here).

  http2_peer.py server        listen on 127.0.0.1:0, print the port, serve one connection:
                              GET /hello -> 200 "hello from h2"; anything else: echo the request
                              body, and the request trailers as response trailers.
  http2_peer.py client PORT   connect, send GET /hello and POST /echo (200 KiB body + trailers),
                              check the answers, print "OK" and exit 0.

Every socket operation has a timeout and the whole run an alarm, so a stuck test cannot hang CI.
"""
import signal
import socket
import sys

import h2.config
import h2.connection
import h2.events

TIMEOUT = 10
signal.alarm(30)


class Sender:
    """Sends queued body bytes as the peer's flow-control windows allow."""

    def __init__(self, conn):
        self.conn = conn
        self.pending = {}  # stream id -> [bytes, trailers]

    def queue(self, stream_id, data, trailers=None):
        self.pending[stream_id] = [data, trailers]
        self.pump()

    def pump(self):
        for stream_id in list(self.pending):
            data, trailers = self.pending[stream_id]
            while data:
                window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                if window <= 0:
                    break
                self.conn.send_data(stream_id, data[:window])
                data = data[window:]
            self.pending[stream_id][0] = data
            if not data:
                if trailers:
                    self.conn.send_headers(stream_id, trailers, end_stream=True)
                else:
                    self.conn.end_stream(stream_id)
                del self.pending[stream_id]


def pattern(n):
    return bytes((i * 131 + i // 4096) & 0xFF for i in range(n))


def serve():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    print(listener.getsockname()[1], flush=True)
    sock, _ = listener.accept()
    sock.settimeout(TIMEOUT)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sender = Sender(conn)
    bodies, paths, trailers = {}, {}, {}
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return 0
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers)
                paths[event.stream_id] = headers[b":path"]
                bodies[event.stream_id] = b""
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers[event.stream_id] = event.headers
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                if paths[sid] == b"/hello":
                    conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
                    sender.queue(sid, b"hello from h2")
                else:
                    conn.send_headers(sid, [(":status", "200"), ("x-echo", "1")])
                    sender.queue(sid, bodies[sid], trailers.get(sid))
            elif isinstance(event, h2.events.WindowUpdated):
                sender.pump()
            elif isinstance(event, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return 0
        sock.sendall(conn.data_to_send())


def client(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sender = Sender(conn)
    base = [(":scheme", "http"), (":authority", "ringmesh.test")]
    hello = conn.get_next_available_stream_id()
    conn.send_headers(hello, [(":method", "GET"), (":path", "/hello")] + base, end_stream=True)
    echo = conn.get_next_available_stream_id()
    conn.send_headers(echo, [(":method", "POST"), (":path", "/echo")] + base)
    body = pattern(200 * 1024)
    sender.queue(echo, body, [("x-checksum", "abc")])
    sock.sendall(conn.data_to_send())
    # stream id -> [response headers, body, trailers, ended]
    got = {hello: [None, b"", None, False], echo: [None, b"", None, False]}
    while not all(v[3] for v in got.values()):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                got[event.stream_id][0] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                got[event.stream_id][1] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                got[event.stream_id][2] = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                got[event.stream_id][3] = True
            elif isinstance(event, h2.events.StreamReset):
                print("reset", event.stream_id, event.error_code)
                return 1
            elif isinstance(event, h2.events.WindowUpdated):
                sender.pump()
        sock.sendall(conn.data_to_send())
    checks = [
        got[hello][0] is not None and got[hello][0].get(b":status") == b"200",
        got[hello][1] == b"hello from h2",
        got[echo][0] is not None and got[echo][0].get(b":status") == b"200",
        got[echo][1] == body,
        got[echo][2] == {b"x-checksum": b"abc"},
    ]
    if not all(checks):
        print("FAIL", checks, got[hello][0], got[echo][0], len(got[echo][1]), got[echo][2])
        return 1
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1] == "server" else client(int(sys.argv[2])))
