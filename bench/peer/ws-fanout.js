// The usual `ws` broadcast server: every message a publisher sends on
// /publish goes to every client connected on /live, one frame per message.
// Prints "listening <port>" once it accepts connections.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const server = http.createServer();
const live = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const publish = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (request, socket, head) => {
  const target = request.url.startsWith('/publish') ? publish : live;
  target.handleUpgrade(request, socket, head, (ws) => target.emit('connection', ws, request));
});

publish.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of live.clients) {
      client.send(data, { binary: isBinary });
    }
  });
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
