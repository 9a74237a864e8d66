// --- ICE: the servers a match came with, and gathering ----------------------------------

/** The RTCPeerConnection shape (``{urls, username?, credential?}``) of decoded broker ICE
 * servers. A TURN server without credentials is left out: the browser refuses one (an
 * InvalidAccessError from the constructor), and it could not allocate a relay anyway. */
function rtcIceServers(servers) {
  const result = [];
  for (const { url, username, credential } of servers) {
    if (username !== null) result.push({ urls: url, username, credential });
    else if (!url.startsWith("turn")) result.push({ urls: url });
  }
  return result;
}

/** Which candidate types to wait for: ``srflx`` when any STUN server is configured,
 * ``relay`` when any TURN server is. */
function wantedCandidates(iceServers) {
  const urls = iceServers.flatMap((server) => [].concat(server.urls));
  return {
    srflx: urls.some((url) => /^stuns?:/.test(url)),
    relay: urls.some((url) => /^turns?:/.test(url)),
  };
}

/** Waits while ``peer`` gathers ICE candidates for the answer, and resolves with why it
 * stopped waiting:
 *
 * - ``"complete"``: the browser finished gathering;
 * - ``"enough"``: LIMITS.gatherGraceMs after the candidates first included a
 *   server-reflexive one (``typ srflx``) if ``wanted.srflx`` and a relay one
 *   (``typ relay``) if ``wanted.relay`` (never when neither is wanted). A STUN server
 *   that silently drops packets keeps the browser gathering for many seconds after the
 *   others answered; the answer does not wait for it. The grace lets the rest of the same
 *   round (another interface's srflx) in;
 * - ``"timeout"``: LIMITS.gatherTimeoutMs passed; the answer goes with what there is.
 */
function gatherCandidates(peer, wanted) {
  return new Promise((resolve) => {
    const seen = new Set();
    let grace = null;
    const timer = setTimeout(() => finish("timeout"), LIMITS.gatherTimeoutMs);
    const finish = (reason) => {
      clearTimeout(timer);
      clearTimeout(grace);
      peer.removeEventListener("icecandidate", onCandidate);
      peer.removeEventListener("icegatheringstatechange", check);
      resolve(reason);
    };
    const check = () => {
      if (peer.iceGatheringState === "complete") return finish("complete");
      const enough = (!wanted.srflx || seen.has("srflx")) && (!wanted.relay || seen.has("relay"));
      if (grace === null && (wanted.srflx || wanted.relay) && enough) {
        grace = setTimeout(() => finish("enough"), LIMITS.gatherGraceMs);
      }
    };
    const onCandidate = (event) => {
      if (event.candidate) seen.add(/ typ ([a-z]+)/.exec(event.candidate.candidate)?.[1]);
      check();
    };
    // candidates gathered before this call are in the local description already
    const sdp = peer.localDescription ? peer.localDescription.sdp : "";
    for (const found of sdp.matchAll(/ typ ([a-z]+)/g)) seen.add(found[1]);
    peer.addEventListener("icecandidate", onCandidate);
    peer.addEventListener("icegatheringstatechange", check);
    check();
  });
}

// --- the relay: one client ---------------------------------------------------------------

class ClientRelay {
  /** ``iceServers``: the decoded ICE servers of the poll response ``match`` came in. */
  constructor(volunteer, match, iceServers) {
    this.volunteer = volunteer;
    this.match = match;
    this.iceServers = iceServers;
    this.peer = null;
    this.channel = null;
    this.socket = null;
    this.held = [];
    this.closed = false;
  }

  async run() {
    const volunteer = this.volunteer;
    // this match's servers from the broker, then any the host page configured
    const iceServers = [...rtcIceServers(this.iceServers), ...volunteer.iceServers];
    const peer = new RTCPeerConnection({ iceServers });
    this.peer = peer;
    const channelArrived = new Promise((resolve) => {
      peer.ondatachannel = (event) => resolve(event.channel);
    });
    peer.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(peer.connectionState)) this.close();
    };
    await peer.setRemoteDescription({ type: "offer", sdp: this.match.offer });
    await peer.setLocalDescription(await peer.createAnswer());
    const reason = await gatherCandidates(peer, wantedCandidates(iceServers));
    // for tests and debugging: why the last answer stopped waiting for candidates
    volunteer.lastGathering = { reason, state: peer.iceGatheringState, iceServers };
    if (this.closed) return;
    const accepted = await volunteer.sendAnswer(this.match.id, peer.localDescription.sdp);
    if (!accepted || this.closed) return this.close(); // the client gave up meanwhile
    const channel = await Promise.race([channelArrived, sleep(LIMITS.openTimeoutMs, volunteer.stopping)]);
    if (!channel || this.closed) return this.close();
    if (channel.label !== "ferry" || channel.protocol !== "ferry-quic/1") return this.close();
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.onmessage = (event) => this.toEgress(event.data);
    channel.onclose = () => this.close();
    const socket = new WebSocket(this.match.egress);
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      for (const datagram of this.held.splice(0)) this.toEgress(datagram);
    };
    socket.onmessage = (event) => this.toClient(event.data);
    socket.onclose = () => this.close();
    socket.onerror = () => this.close();
    volunteer.clientHelped();
  }

  toEgress(data) {
    if (typeof data === "string" || data.byteLength < 1 || data.byteLength > LIMITS.maxDatagramBytes) {
      return; // docs/protocol.md §3: text and oversize messages are dropped
    }
    const socket = this.socket;
    if (!socket || socket.readyState === WebSocket.CONNECTING) {
      if (this.held.length < LIMITS.maxHeldDatagrams) this.held.push(data);
      return;
    }
    if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > LIMITS.highWaterBytes) return;
    if (!this.volunteer.admit(data.byteLength)) return;
    socket.send(data);
    this.volunteer.relayed(data.byteLength);
  }

  toClient(data) {
    const channel = this.channel;
    if (typeof data === "string" || !channel || channel.readyState !== "open") return;
    if (channel.bufferedAmount > LIMITS.highWaterBytes) return;
    if (!this.volunteer.admit(data.byteLength)) return;
    try {
      channel.send(data);
    } catch {
      return; // closed under us, or larger than the client accepts
    }
    this.volunteer.relayed(data.byteLength);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.held = [];
    if (this.socket) this.socket.close();
    if (this.channel) this.channel.close();
    if (this.peer) this.peer.close();
    this.volunteer.relayEnded(this);
  }
}
