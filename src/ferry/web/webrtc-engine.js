// ferry's WebRTC engine page: the browser owns the RTCPeerConnections, Python owns the rest.
//
// Inlined by ferry.transport.browser_webrtc into the engine page, a file only this user can
// read, which the browser it starts opens; the page sets FERRY_ENGINE = {socket, secret}.
// The page connects to the engine's loopback WebSocket, proves it was opened from that file
// with the secret, then obeys the control messages of docs/protocol.md §8 and carries the
// session's datagrams:
//
//   text   {"op": "offer",  "peer": N, "config": {...}}   make an offer (client side)
//          {"op": "answer", "peer": N, "sdp": "..."}      apply the answer to it
//          {"op": "accept", "peer": N, "sdp": "...", "config": {...}}   answer an offer
//          {"op": "close",  "peer": N}
//   page → {"op": "offered"|"answered", "peer": N, "sdp": "..."}, {"op": "open", "peer": N},
//          {"op": "closed", "peer": N, "reason": "..."}
//   binary frames both ways: repeated [u32 peer][u16 length][datagram]
"use strict";

(() => {
  const LABEL = "ferry";
  const PROTOCOL = "ferry-quic/1";
  const FRAME_HEADER = 6;

  const { secret } = FERRY_ENGINE; // eslint-disable-line no-undef
  const socket = new WebSocket(FERRY_ENGINE.socket); // eslint-disable-line no-undef
  socket.binaryType = "arraybuffer";
  const peers = new Map();
  let outgoing = [];
  let outgoingBytes = 0;
  let flushScheduled = false;
  const ticker = new MessageChannel();
  ticker.port1.onmessage = () => flush();

  function control(message) {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function flush() {
    flushScheduled = false;
    if (!outgoing.length || socket.readyState !== WebSocket.OPEN) return;
    const batch = new Uint8Array(outgoingBytes);
    let offset = 0;
    for (const part of outgoing) {
      batch.set(part, offset);
      offset += part.byteLength;
    }
    outgoing = [];
    outgoingBytes = 0;
    socket.send(batch);
  }

  function toPython(peerId, data) {
    if (data.byteLength > 65535 || socket.bufferedAmount > peers.get(peerId).config.highWaterBytes) {
      return; // a frame's length field has 16 bits; a full socket drops, as a router would
    }
    const frame = new Uint8Array(FRAME_HEADER + data.byteLength);
    const view = new DataView(frame.buffer);
    view.setUint32(0, peerId);
    view.setUint16(4, data.byteLength);
    frame.set(new Uint8Array(data), FRAME_HEADER);
    outgoing.push(frame);
    outgoingBytes += frame.byteLength;
    if (outgoingBytes >= 65536) flush();
    else if (!flushScheduled) {
      flushScheduled = true;
      ticker.port2.postMessage(null);
    }
  }

  function fromPython(buffer) {
    const view = new DataView(buffer);
    let offset = 0;
    while (offset + FRAME_HEADER <= buffer.byteLength) {
      const peerId = view.getUint32(offset);
      const length = view.getUint16(offset + 4);
      const start = offset + FRAME_HEADER;
      offset = start + length;
      const peer = peers.get(peerId);
      const channel = peer && peer.channel;
      if (!channel || channel.readyState !== "open") continue;
      if (channel.bufferedAmount > peer.config.highWaterBytes) continue;
      try {
        channel.send(new Uint8Array(buffer, start, length));
      } catch {
        // closed under us, or larger than the peer accepts: dropped, as a router would
      }
    }
  }

  // The remote peer's candidates on the given addresses only (null: all of them).
  function onlyCandidates(sdp, addresses) {
    if (!addresses) return sdp;
    return sdp
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:") || addresses.includes(line.split(" ")[4]))
      .join("\r\n");
  }

  // Our own candidates announced on the given addresses only (null: as gathered). A page
  // cannot choose the interfaces the browser gathers on, and Chromium gathers none on
  // loopback; its UDP sockets listen on every local address, so each IPv4 host candidate's
  // port is announced under the first given address instead (tests, demos: 127.0.0.1).
  function announcedCandidates(sdp, addresses) {
    if (!addresses) return sdp;
    const seen = new Set();
    const lines = [];
    for (const line of sdp.split("\r\n")) {
      if (line.startsWith("a=candidate:")) {
        const fields = line.split(" ");
        if (fields[2].toLowerCase() !== "udp" || fields[7] !== "host" || fields[4].includes(":")) continue;
        if (!addresses.includes(fields[4])) fields[4] = addresses[0];
        const key = `${fields[4]} ${fields[5]}`;
        if (seen.has(key)) continue;
        seen.add(key);
        lines.push(fields.join(" "));
      } else lines.push(line);
    }
    return lines.join("\r\n");
  }

  // Gathering ends at "complete", at the timeout, or, sooner, once every kind of server
  // given has produced its candidate (a server-reflexive one for STUN, a relay one for TURN)
  // and a short grace has passed for the rest of that round: a STUN server that silently
  // drops packets keeps Chromium gathering for many seconds, and must not hold up the offer.
  const ENOUGH_GRACE_MS = 150;

  function gathered(peer, timeoutMs) {
    if (peer.connection.iceGatheringState === "complete") return Promise.resolve();
    const urls = peer.config.iceServers.map((server) => String(server.urls));
    const wantSrflx = urls.some((url) => url.startsWith("stun"));
    const wantRelay = urls.some((url) => url.startsWith("turn"));
    return new Promise((resolve) => {
      let graceTimer = null;
      const timer = setTimeout(resolve, timeoutMs);
      const done = () => (clearTimeout(timer), clearTimeout(graceTimer), resolve());
      const seen = new Set();
      peer.connection.addEventListener("icecandidate", (event) => {
        if (event.candidate && event.candidate.type) seen.add(event.candidate.type);
        const enough = (!wantSrflx || seen.has("srflx")) && (!wantRelay || seen.has("relay"));
        if ((wantSrflx || wantRelay) && enough && graceTimer === null) {
          graceTimer = setTimeout(done, ENOUGH_GRACE_MS);
        }
      });
      peer.connection.addEventListener("icegatheringstatechange", () => {
        if (peer.connection.iceGatheringState === "complete") done();
      });
    });
  }

  function closePeer(peerId, reason, tell) {
    const peer = peers.get(peerId);
    if (!peer) return;
    peers.delete(peerId);
    if (peer.channel) peer.channel.close();
    peer.connection.close();
    if (tell) control({ op: "closed", peer: peerId, reason });
  }

  function newPeer(peerId, config) {
    const connection = new RTCPeerConnection({ iceServers: config.iceServers });
    const peer = { connection, channel: null, config };
    peers.set(peerId, peer);
    // A STUN or TURN server that failed: reported by its URL and error only (the event's
    // local address stays in the page).
    connection.addEventListener("icecandidateerror", (event) => {
      if (!event.url) return;
      control({
        op: "ice-error",
        peer: peerId,
        url: String(event.url).slice(0, 300),
        code: Number(event.errorCode) | 0,
        text: String(event.errorText || "").slice(0, 200),
      });
    });
    connection.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(connection.connectionState)) {
        closePeer(peerId, `the WebRTC connection ${connection.connectionState}`, true);
      }
    };
    return peer;
  }

  function useChannel(peerId, peer, channel) {
    peer.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.onmessage = (event) => {
      if (typeof event.data === "string") return; // ferry carries binary only
      toPython(peerId, event.data);
    };
    channel.onclose = () => closePeer(peerId, "the data channel closed", true);
    const opened = () => control({ op: "open", peer: peerId });
    if (channel.readyState === "open") opened();
    else channel.onopen = opened;
  }

  async function offer(peerId, config) {
    const peer = newPeer(peerId, config);
    const channel = peer.connection.createDataChannel(LABEL, {
      ordered: false,
      maxRetransmits: 0,
      protocol: PROTOCOL,
    });
    useChannel(peerId, peer, channel);
    await peer.connection.setLocalDescription(await peer.connection.createOffer());
    await gathered(peer, config.gatherTimeoutMs);
    if (!peers.has(peerId)) return;
    const sdp = announcedCandidates(peer.connection.localDescription.sdp, config.hostAddresses);
    control({ op: "offered", peer: peerId, sdp });
  }

  async function answer(peerId, sdp) {
    const peer = peers.get(peerId);
    if (!peer) return;
    sdp = onlyCandidates(sdp, peer.config.remoteAddresses);
    await peer.connection.setRemoteDescription({ type: "answer", sdp });
  }

  async function accept(peerId, sdp, config) {
    const peer = newPeer(peerId, config);
    peer.connection.ondatachannel = (event) => {
      const channel = event.channel;
      if (peer.channel || channel.label !== LABEL || channel.protocol !== PROTOCOL) {
        channel.close();
        control({ op: "refused", peer: peerId, label: channel.label, protocol: channel.protocol });
        return;
      }
      useChannel(peerId, peer, channel);
    };
    sdp = onlyCandidates(sdp, config.remoteAddresses);
    await peer.connection.setRemoteDescription({ type: "offer", sdp });
    await peer.connection.setLocalDescription(await peer.connection.createAnswer());
    await gathered(peer, config.gatherTimeoutMs);
    if (!peers.has(peerId)) return;
    const local = announcedCandidates(peer.connection.localDescription.sdp, config.hostAddresses);
    control({ op: "answered", peer: peerId, sdp: local });
  }

  async function obey(message) {
    const peerId = message.peer;
    try {
      if (message.op === "offer") await offer(peerId, message.config);
      else if (message.op === "answer") await answer(peerId, message.sdp);
      else if (message.op === "accept") await accept(peerId, message.sdp, message.config);
      else if (message.op === "close") closePeer(peerId, "closed by ferry", false);
    } catch (error) {
      const reason = `${error.name}: ${error.message}`;
      if (peers.has(peerId)) closePeer(peerId, reason, true);
      else control({ op: "closed", peer: peerId, reason });
    }
  }

  socket.onopen = () => socket.send(JSON.stringify({ op: "hello", secret }));
  socket.onmessage = (event) => {
    if (typeof event.data === "string") obey(JSON.parse(event.data));
    else fromPython(event.data);
  };
  socket.onclose = () => {
    for (const peerId of [...peers.keys()]) closePeer(peerId, "engine socket closed", false);
    window.close();
  };
})();
