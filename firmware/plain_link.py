"""The unencrypted proxy link (``"link": "plaintext"``: a proxy run with
--insecure; tests), with SecureLink's interface. Its own module, imported
only by a node configured for it: a board on a Noise link never holds its
code."""


class PlainLink:
    """The unencrypted session, with SecureLink's interface (proxies run
    with --insecure; tests)."""

    def __init__(self, session):
        self.session = session
        self.dropped = 0

    def start(self, now, ephemeral_private):
        self.session.start(now, False)

    def receive(self, data, now):
        self.session.receive(data, now)

    def poll(self, now):
        self.session.poll(now)

    def next_deadline(self):
        return self.session.next_deadline()

    def events(self):
        return self.session.events()

    def data_to_send(self):
        return self.session.data_to_send()
