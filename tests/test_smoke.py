from conftest import RawClient, hello_app


async def test_hello(start_server, raw_client) -> None:
    server = await start_server(hello_app)
    client: RawClient = await raw_client(server.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
    for _ in range(2):
        status, headers, body = await client.read_response()
        assert status == b"HTTP/1.1 200 OK"
        assert body == b"Hello, world!\n"
        assert headers[b"content-length"] == b"14"
