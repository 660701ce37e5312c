-- SPDX-License-Identifier: MIT
-- Wireshark dissector for kadpunch (docs/protocol.md), on UDP, found by a
-- heuristic (kadpunch uses any port):
--   0x90-0x9f  a DHT message (msgpack array of 11, 12 with padding), with the
--              envelopes of PEER_HANDSHAKE, PEER_HOLEPUNCH and PEER_RESUME
--              (modes FROM_CLIENT, FROM_RELAY, FROM_SERVER, REPLY; rounds)
--   0x41       a stream packet: header and ack block (the frames are encrypted;
--              of a GSO send caught on loopback, the first packet's header)
--   0x50       a probe (61 bytes; several at once, as a loopback capture shows
--              UDP GSO sends, are each dissected)
--   0x52       a blind relay's control datagram (89 bytes): PAIR, PAIRED, REFUSED
--   0x58       a peer's session datagram with its proxy: KEY?, KEY, HELLO, WELCOME,
--              REFUSED, DATA (the session's ops are inside DATA, encrypted; what
--              an allocation sends and receives is ordinary kadpunch traffic),
--              PASS (a bound stream packet, unsealed: dissected as one)
--
-- Install: copy to ~/.local/lib/wireshark/plugins/ (or run
-- `tshark -X lua_script:contrib/wireshark/kadpunch.lua`). Filters: kadpunch,
-- kadpunch.dht.command == 25, kadpunch.env.mode == 1, kadpunch.kind == "probe",
-- kadpunch.proxy.type == 6.

local kp = Proto("kadpunch", "kadpunch")

local KIND = {dht = "dht", stream = "stream", probe = "probe", relay = "relay", proxy = "proxy"}

local COMMANDS = {
  [0] = "PING", [1] = "PING_NAT", [2] = "FIND_NODE", [3] = "DOWN_HINT",
  [16] = "ANNOUNCE", [17] = "UNANNOUNCE", [18] = "LOOKUP", [19] = "MUTABLE_PUT",
  [20] = "MUTABLE_GET", [21] = "IMMUTABLE_PUT", [22] = "IMMUTABLE_GET",
  [24] = "PEER_HANDSHAKE", [25] = "PEER_HOLEPUNCH", [26] = "PEER_RESUME",
}
local ERRORS = {
  [0] = "none", [1] = "unknown command", [2] = "bad token", [3] = "truncated to the request size",
  [16] = "signature does not verify", [17] = "seq not newer", [18] = "compare-and-swap mismatch",
  [19] = "no room", [20] = "malformed request", [21] = "over the signature-check budget",
  [22] = "not stored from there", [32] = "no announcement of that key",
  [33] = "the server did not answer", [34] = "busy", [35] = "unknown session", [36] = "rejected",
}
local MODES = {[0] = "FROM_CLIENT", [1] = "FROM_RELAY", [2] = "FROM_SERVER", [3] = "REPLY"}
local RELAY_TYPES = {[1] = "PAIR", [2] = "PAIRED", [3] = "REFUSED"}
local RELAY_REFUSALS = {[1] = "relay full", [2] = "too many attempts", [4] = "IP over its share"}
local PROXY_TYPES = {[1] = "KEY?", [2] = "KEY", [3] = "HELLO", [4] = "WELCOME", [5] = "REFUSED",
                     [6] = "DATA", [7] = "PASS"}
local PROXY_REASONS = {
  [1] = "key not allowed", [2] = "full", [3] = "key holds its allocations",
  [4] = "IP holds its share", [5] = "rate", [6] = "expired", [7] = "quota", [8] = "version",
}

local f = {
  kind = ProtoField.string("kadpunch.kind", "Kind"),
  version = ProtoField.uint8("kadpunch.dht.version", "Version"),
  mtype = ProtoField.uint8("kadpunch.dht.type", "Type", base.DEC, {[0] = "request", [1] = "response"}),
  tid = ProtoField.uint16("kadpunch.dht.tid", "Transaction id", base.HEX),
  to = ProtoField.string("kadpunch.dht.to", "Sent to"),
  id = ProtoField.bytes("kadpunch.dht.id", "Node id"),
  token = ProtoField.bytes("kadpunch.dht.token", "Token"),
  command = ProtoField.uint8("kadpunch.dht.command", "Command", base.DEC, COMMANDS),
  target = ProtoField.bytes("kadpunch.dht.target", "Target"),
  nodes = ProtoField.string("kadpunch.dht.nodes", "Nodes"),
  value = ProtoField.bytes("kadpunch.dht.value", "Value"),
  err = ProtoField.uint8("kadpunch.dht.error", "Error", base.DEC, ERRORS),
  padding = ProtoField.uint16("kadpunch.dht.padding", "Padding bytes"),
  env_mode = ProtoField.uint8("kadpunch.env.mode", "Envelope mode", base.DEC, MODES),
  env_data = ProtoField.bytes("kadpunch.env.data", "Envelope data"),
  env_peer = ProtoField.string("kadpunch.env.peer", "Peer address (claimed by the relay node)"),
  env_session = ProtoField.uint64("kadpunch.env.session", "Session"),
  round = ProtoField.uint32("kadpunch.hp.round", "Holepunch round"),
  noise = ProtoField.string("kadpunch.hs.message", "Noise message"),
  s_flags = ProtoField.uint8("kadpunch.stream.flags", "Flags", base.HEX),
  s_ack = ProtoField.bool("kadpunch.stream.flags.ack", "Ack block", 8, nil, 0x01),
  s_acknow = ProtoField.bool("kadpunch.stream.flags.ack_now", "ACK_NOW", 8, nil, 0x02),
  s_dcid = ProtoField.uint64("kadpunch.stream.dcid", "Destination connection id", base.HEX),
  s_pn = ProtoField.uint64("kadpunch.stream.pn", "Packet number"),
  s_largest = ProtoField.uint64("kadpunch.stream.ack.largest", "Largest received"),
  s_delay = ProtoField.uint16("kadpunch.stream.ack.delay", "Ack delay (8 us units)"),
  s_maxdata = ProtoField.uint64("kadpunch.stream.ack.max_data", "Max data"),
  s_ranges = ProtoField.uint8("kadpunch.stream.ack.ranges", "Additional ranges"),
  s_first = ProtoField.uint16("kadpunch.stream.ack.first", "First range"),
  s_frames = ProtoField.bytes("kadpunch.stream.frames", "Frames (encrypted)"),
  s_tag = ProtoField.bytes("kadpunch.stream.tag", "AEAD tag"),
  p_flags = ProtoField.uint8("kadpunch.probe.flags", "Flags", base.HEX),
  p_client = ProtoField.bool("kadpunch.probe.flags.client", "From the client", 8, nil, 0x01),
  p_answer = ProtoField.bool("kadpunch.probe.flags.answer", "Answer", 8, nil, 0x02),
  p_punch = ProtoField.bool("kadpunch.probe.flags.punch", "Punch request", 8, nil, 0x04),
  p_bday = ProtoField.bool("kadpunch.probe.flags.birthday", "Birthday request", 8, nil, 0x08),
  p_own = ProtoField.bool("kadpunch.probe.flags.own_addr", "Own address", 8, nil, 0x10),
  p_nat = ProtoField.uint8("kadpunch.probe.flags.nat", "Sender's NAT", base.DEC,
    {[0] = "unknown", [1] = "open", [2] = "consistent", [3] = "random"}, 0x60),
  p_conn = ProtoField.uint64("kadpunch.probe.conn", "Receiver's connection id", base.HEX),
  p_nonce = ProtoField.bytes("kadpunch.probe.nonce", "Nonce"),
  p_echo = ProtoField.bytes("kadpunch.probe.echo", "Echoed nonce"),
  p_observed = ProtoField.string("kadpunch.probe.observed", "Observed address"),
  p_mac = ProtoField.bytes("kadpunch.probe.mac", "MAC"),
  r_type = ProtoField.uint8("kadpunch.relay.type", "Type", base.DEC, RELAY_TYPES),
  r_role = ProtoField.uint8("kadpunch.relay.role", "Role", base.DEC, {[0] = "client", [1] = "server"}),
  r_reason = ProtoField.uint8("kadpunch.relay.reason", "Refusal", base.DEC, RELAY_REFUSALS),
  r_pair = ProtoField.bytes("kadpunch.relay.pair_id", "Pair id"),
  r_reveal = ProtoField.bytes("kadpunch.relay.reveal", "Reveal"),
  r_commit = ProtoField.bytes("kadpunch.relay.commit", "Commit"),
  r_client = ProtoField.string("kadpunch.relay.client_link", "Client's link"),
  r_server = ProtoField.string("kadpunch.relay.server_link", "Server's link"),
  x_type = ProtoField.uint8("kadpunch.proxy.type", "Type", base.DEC, PROXY_TYPES),
  x_version = ProtoField.uint8("kadpunch.proxy.version", "Version"),
  x_key = ProtoField.bytes("kadpunch.proxy.key", "Proxy's ed25519 key"),
  x_sender = ProtoField.uint32("kadpunch.proxy.sender", "Sender index", base.HEX),
  x_receiver = ProtoField.uint32("kadpunch.proxy.receiver", "Receiver index", base.HEX),
  x_noise_len = ProtoField.uint16("kadpunch.proxy.noise_len", "Noise message length"),
  x_noise = ProtoField.bytes("kadpunch.proxy.noise", "Noise message"),
  x_padding = ProtoField.uint16("kadpunch.proxy.padding", "Padding bytes"),
  x_reason = ProtoField.uint8("kadpunch.proxy.reason", "Refusal", base.DEC, PROXY_REASONS),
  x_counter = ProtoField.uint64("kadpunch.proxy.counter", "Counter"),
  x_sealed = ProtoField.bytes("kadpunch.proxy.sealed", "Sealed body (op, channel, ...)"),
  x_token = ProtoField.uint64("kadpunch.proxy.token", "Binding token", base.HEX),
}
kp.fields = f

local e_malformed = ProtoExpert.new("kadpunch.malformed", "Malformed kadpunch message",
                                    expert.group.MALFORMED, expert.severity.ERROR)
kp.experts = {e_malformed}

-- ---- msgpack -----------------------------------------------------------------------------

-- Reads one msgpack value at off; returns a node {t, v, off, len, items}
-- or nil and a reason. Only what the protocol uses: ints, nil, bools,
-- bin, str, arrays (maps and floats are read past).
local function mp_read(tvb, off, depth)
  depth = depth or 0
  local total = tvb:len()
  if off >= total then return nil, "cut short" end
  if depth > 8 then return nil, "nested too deep" end
  local b = tvb(off, 1):uint()
  local function need(n) return off + n <= total end
  local function int(n)
    if not need(1 + n) then return nil, "cut short" end
    local v = n == 8 and tvb(off + 1, 8):uint64() or tvb(off + 1, n):uint()
    return {t = "int", v = v, off = off, len = 1 + n}
  end
  local function bytes(t, hdr, n)
    if not need(hdr + n) then return nil, "cut short" end
    return {t = t, off = off, len = hdr + n, voff = off + hdr, vlen = n}
  end
  local function array(hdr, n)
    local node = {t = "array", off = off, items = {}}
    local pos = off + hdr
    for i = 1, n do
      local item, why = mp_read(tvb, pos, depth + 1)
      if not item then return nil, why end
      node.items[i] = item
      pos = pos + item.len
    end
    node.len = pos - off
    return node
  end
  if b <= 0x7f then return {t = "int", v = b, off = off, len = 1} end
  if b >= 0xe0 then return {t = "int", v = b - 256, off = off, len = 1} end
  if b >= 0x90 and b <= 0x9f then return array(1, b - 0x90) end
  if b >= 0xa0 and b <= 0xbf then return bytes("str", 1, b - 0xa0) end
  if b == 0xc0 then return {t = "nil", off = off, len = 1} end
  if b == 0xc2 or b == 0xc3 then return {t = "bool", v = b == 0xc3, off = off, len = 1} end
  if b == 0xc4 or b == 0xd9 then
    if not need(2) then return nil, "cut short" end
    return bytes(b == 0xc4 and "bin" or "str", 2, tvb(off + 1, 1):uint())
  end
  if b == 0xc5 or b == 0xda then
    if not need(3) then return nil, "cut short" end
    return bytes(b == 0xc5 and "bin" or "str", 3, tvb(off + 1, 2):uint())
  end
  if b == 0xc6 or b == 0xdb then
    if not need(5) then return nil, "cut short" end
    return bytes(b == 0xc6 and "bin" or "str", 5, tvb(off + 1, 4):uint())
  end
  if b == 0xcc then return int(1) end
  if b == 0xcd then return int(2) end
  if b == 0xce then return int(4) end
  if b == 0xcf then return int(8) end
  if b == 0xd0 then return int(1) end
  if b == 0xd1 then return int(2) end
  if b == 0xd2 then return int(4) end
  if b == 0xd3 then return int(8) end
  if b == 0xdc then
    if not need(3) then return nil, "cut short" end
    return array(3, tvb(off + 1, 2):uint())
  end
  if b == 0xdd then
    if not need(5) then return nil, "cut short" end
    return array(5, tvb(off + 1, 4):uint())
  end
  return nil, string.format("msgpack type 0x%02x is not used by kadpunch", b)
end

local function num(node)
  if node and node.t == "int" then return tonumber(tostring(node.v)) end
  return nil
end

local function range_of(tvb, node) return tvb(node.off, node.len) end

local function value_range(tvb, node)
  if node.vlen == 0 then return tvb(node.off, node.len) end
  return tvb(node.voff, node.vlen)
end

-- A compact address (6 or 18 bytes) as text.
local function compact(tvb, off, len)
  if len == 6 then
    return string.format("%s:%d", tostring(tvb(off, 4):ipv4()), tvb(off + 4, 2):uint())
  elseif len == 18 then
    return string.format("[%s]:%d", tostring(tvb(off, 16):ipv6()), tvb(off + 16, 2):uint())
  end
  return nil
end

-- ---- DHT messages --------------------------------------------------------------------------

local function malformed(tree, pinfo, why)
  tree:add_proto_expert_info(e_malformed, why)
  pinfo.cols.info:append(" [malformed: " .. why .. "]")
end

-- The envelope of PEER_HANDSHAKE / PEER_HOLEPUNCH / PEER_RESUME:
-- [mode, data (bin), peer address or nil, session (uint)].
local function dissect_envelope(vtvb, tree, pinfo, command)
  local env, why = mp_read(vtvb, 0)
  if not env or env.t ~= "array" or #env.items ~= 4 then
    return malformed(tree, pinfo, "envelope: " .. (why or "not an array of 4"))
  end
  local it = env.items
  local mode = num(it[1])
  if mode == nil or MODES[mode] == nil or it[2].t ~= "bin" then
    return malformed(tree, pinfo, "envelope: bad mode or data")
  end
  local t = tree:add(kp, vtvb(), "Envelope " .. MODES[mode])
  t:add(f.env_mode, range_of(vtvb, it[1]), mode)
  local data = value_range(vtvb, it[2])
  t:add(f.env_data, data)
  if it[3].t == "bin" then
    local text = compact(vtvb, it[3].voff, it[3].vlen)
    if not text then return malformed(tree, pinfo, "envelope: peer address length") end
    t:add(f.env_peer, range_of(vtvb, it[3]), text)
  end
  if it[4].t == "int" then t:add(f.env_session, range_of(vtvb, it[4]), UInt64(num(it[4]) or 0)) end
  local info = " " .. MODES[mode]
  if command == 25 and it[2].vlen >= 4 then
    local round = vtvb(it[2].voff, 4):uint()
    t:add(f.round, vtvb(it[2].voff, 4), round)
    info = info .. " round " .. round
  elseif command == 24 then
    local which = (mode == 0 or mode == 1) and "message 1 (hello)" or "message 2 (welcome)"
    t:add(f.noise, data, which)
    info = info .. " " .. which
  end
  pinfo.cols.info:append(info)
end

local DHT_FIELDS = 11

local function dissect_dht(tvb, pinfo, tree)
  local msg, why = mp_read(tvb, 0)
  local t = tree:add(kp, tvb(), "kadpunch DHT message")
  t:add(f.kind, tvb(0, 1), KIND.dht)
  if not msg then return malformed(t, pinfo, why) end
  if msg.t ~= "array" or (#msg.items ~= DHT_FIELDS and #msg.items ~= DHT_FIELDS + 1) then
    return malformed(t, pinfo, "not an array of 11 or 12")
  end
  local it = msg.items
  local version, mtype, tid, command = num(it[1]), num(it[2]), num(it[3]), num(it[7])
  if version == nil or mtype == nil or tid == nil or command == nil then
    return malformed(t, pinfo, "version, type, tid and command are integers")
  end
  t:add(f.version, range_of(tvb, it[1]), version)
  t:add(f.mtype, range_of(tvb, it[2]), mtype)
  t:add(f.tid, range_of(tvb, it[3]), tid)
  if it[4].t == "bin" then
    t:add(f.to, range_of(tvb, it[4]), compact(tvb, it[4].voff, it[4].vlen) or "?")
  end
  if it[5].t == "bin" then t:add(f.id, value_range(tvb, it[5])) end
  if it[6].t == "bin" then t:add(f.token, value_range(tvb, it[6])) end
  t:add(f.command, range_of(tvb, it[7]), command)
  if it[8].t == "bin" then t:add(f.target, value_range(tvb, it[8])) end
  if it[9].t == "bin" then
    local n, step = it[9].vlen, (it[9].vlen % 18 == 0 and it[9].vlen % 6 ~= 0) and 18 or 6
    t:add(f.nodes, range_of(tvb, it[9]), string.format("%d node(s)", math.floor(n / step)))
  end
  local err = num(it[11]) or 0
  t:add(f.err, range_of(tvb, it[11]), err)
  if it[12] then t:add(f.padding, range_of(tvb, it[12]), it[12].vlen or 0) end
  local name = COMMANDS[command] or ("command " .. command)
  pinfo.cols.info:set(string.format("DHT %s %s tid=0x%04x", name,
                                    mtype == 0 and "request" or "response", tid))
  if err ~= 0 then pinfo.cols.info:append(" error " .. err .. " (" .. (ERRORS[err] or "?") .. ")") end
  if it[10].t == "bin" then
    local vr = value_range(tvb, it[10])
    t:add(f.value, vr)
    if (command == 24 or command == 25 or command == 26) and it[10].vlen > 0 then
      dissect_envelope(vr:tvb(), t, pinfo, command)
    end
  end
end

-- ---- Stream packets ------------------------------------------------------------------------

local function dissect_stream(tvb, pinfo, tree)
  local t = tree:add(kp, tvb(), "kadpunch stream packet")
  t:add(f.kind, tvb(0, 1), KIND.stream)
  local flags = tvb(1, 1):uint()
  local ft = t:add(f.s_flags, tvb(1, 1))
  ft:add(f.s_ack, tvb(1, 1))
  ft:add(f.s_acknow, tvb(1, 1))
  if bit32.band(flags, 0xfc) ~= 0 then return malformed(t, pinfo, "unknown flag bits") end
  t:add(f.s_dcid, tvb(2, 8))
  t:add(f.s_pn, tvb(10, 8))
  local pos = 18
  local info = "Stream pn=" .. tostring(tvb(10, 8):uint64())
  if bit32.band(flags, 0x01) ~= 0 then
    if tvb:len() < 39 + 16 then return malformed(t, pinfo, "ack block cut short") end
    local n = tvb(36, 1):uint()
    if n > 16 or tvb:len() < 39 + 4 * n + 16 then return malformed(t, pinfo, "ack ranges") end
    local at = t:add(kp, tvb(18, 21 + 4 * n), "Ack block")
    at:add(f.s_largest, tvb(18, 8))
    at:add(f.s_delay, tvb(26, 2))
    at:add(f.s_maxdata, tvb(28, 8))
    at:add(f.s_ranges, tvb(36, 1))
    at:add(f.s_first, tvb(37, 2))
    pos = 39 + 4 * n
    info = info .. " ack=" .. tostring(tvb(18, 8):uint64())
  end
  if tvb:len() < pos + 16 then return malformed(t, pinfo, "no room for the tag") end
  if tvb:len() > pos + 16 then t:add(f.s_frames, tvb(pos, tvb:len() - pos - 16)) end
  t:add(f.s_tag, tvb(tvb:len() - 16, 16))
  if bit32.band(flags, 0x02) ~= 0 then info = info .. " ACK_NOW" end
  pinfo.cols.info:set(info)
end

-- ---- Probes --------------------------------------------------------------------------------

local function dissect_probe_one(tvb, pinfo, tree)
  local t = tree:add(kp, tvb(), "kadpunch probe")
  t:add(f.kind, tvb(0, 1), KIND.probe)
  local flags = tvb(1, 1):uint()
  local ft = t:add(f.p_flags, tvb(1, 1))
  ft:add(f.p_client, tvb(1, 1))
  ft:add(f.p_answer, tvb(1, 1))
  ft:add(f.p_punch, tvb(1, 1))
  ft:add(f.p_bday, tvb(1, 1))
  ft:add(f.p_own, tvb(1, 1))
  ft:add(f.p_nat, tvb(1, 1))
  t:add(f.p_conn, tvb(2, 8))
  t:add(f.p_nonce, tvb(10, 8))
  t:add(f.p_echo, tvb(18, 8))
  local olen = tvb(26, 1):uint()
  if olen ~= 0 and olen ~= 6 and olen ~= 18 then
    malformed(t, pinfo, "observed length")
    return "Probe"
  end
  if olen > 0 then t:add(f.p_observed, tvb(27, olen), compact(tvb, 27, olen)) end
  t:add(f.p_mac, tvb(45, 16))
  local words = {}
  if bit32.band(flags, 1) ~= 0 then words[#words + 1] = "from the client" end
  if bit32.band(flags, 2) ~= 0 then words[#words + 1] = "answer" end
  if bit32.band(flags, 4) ~= 0 then words[#words + 1] = "punch request" end
  if bit32.band(flags, 8) ~= 0 then words[#words + 1] = "birthday request" end
  return "Probe" .. (#words > 0 and (" (" .. table.concat(words, ", ") .. ")") or "")
end

local classify

-- Segments of one size sent at once reach a loopback capture as one
-- packet (UDP GSO): each 61 bytes is a probe of its own. The batch's last
-- segment may be shorter or as long, and of another kind (a small stream
-- packet to the same address, say): it is dissected as what it is.
local function dissect_probe(tvb, pinfo, tree)
  local parts = {}
  local whole = 0
  while whole + 61 <= tvb:len() and tvb(whole, 1):uint() == 0x50 do
    parts[#parts + 1] = dissect_probe_one(tvb(whole, 61):tvb(), pinfo, tree)
    whole = whole + 61
  end
  local tail = tvb:len() - whole
  if tail > 0 then
    local ttvb = tvb(whole, tail):tvb()
    local fn = classify(ttvb)
    if not fn then
      local t = tree:add(kp, ttvb(), "kadpunch GSO batch: last segment")
      pinfo.cols.info:set(table.concat(parts, "; "))
      return malformed(t, pinfo, "a last segment of no known kind")
    end
    fn(ttvb, pinfo, tree)
    parts[#parts + 1] = tostring(pinfo.cols.info)
  end
  pinfo.cols.info:set(table.concat(parts, "; "))
end

-- ---- Relay control -------------------------------------------------------------------------

local function dissect_relay(tvb, pinfo, tree)
  local t = tree:add(kp, tvb(), "kadpunch relay control")
  t:add(f.kind, tvb(0, 1), KIND.relay)
  local rtype = tvb(1, 1):uint()
  if RELAY_TYPES[rtype] == nil then return malformed(t, pinfo, "relay control type") end
  t:add(f.r_type, tvb(1, 1))
  if rtype == 1 then
    t:add(f.r_role, tvb(2, 1))
  elseif rtype == 3 then
    t:add(f.r_reason, tvb(2, 1))
  end
  t:add(f.r_pair, tvb(3, 16))
  if rtype == 1 then
    t:add(f.r_reveal, tvb(19, 16))
    t:add(f.r_commit, tvb(35, 16))
  end
  local info = "Relay " .. RELAY_TYPES[rtype]
  if rtype == 2 then
    local cl, sl = tvb(51, 1):uint(), tvb(70, 1):uint()
    local ctext, stext = compact(tvb, 52, cl), compact(tvb, 71, sl)
    if (cl ~= 0 and not ctext) or (sl ~= 0 and not stext) then
      return malformed(t, pinfo, "link length")
    end
    if ctext then t:add(f.r_client, tvb(52, cl), ctext) end
    if stext then t:add(f.r_server, tvb(71, sl), stext) end
  elseif rtype == 1 then
    info = info .. (tvb(2, 1):uint() == 0 and " (client)" or " (server)")
  else
    info = info .. " (" .. (RELAY_REFUSALS[tvb(2, 1):uint()] or "?") .. ")"
  end
  pinfo.cols.info:set(info)
end

-- ---- Proxy sessions (docs/protocol.md "Proxying") ---------------------------------------------

local PROXY_KEY_LEN, PROXY_HELLO_LEN, PROXY_REFUSED_LEN = 64, 256, 7
local PROXY_DATA_MIN = 14 + 16 + 2 -- header, tag, op and channel

-- Checks one message's length; returns the reason it is wrong, or nil.
local function proxy_length_wrong(ptype, len)
  if (ptype == 1 or ptype == 2) and len ~= PROXY_KEY_LEN then return "KEY length" end
  if ptype == 3 and len ~= PROXY_HELLO_LEN then return "HELLO length" end
  if ptype == 4 and (len <= 10 or len > PROXY_HELLO_LEN) then return "WELCOME length" end
  if ptype == 5 and len ~= PROXY_REFUSED_LEN then return "REFUSED length" end
  if ptype == 6 and len < PROXY_DATA_MIN then return "DATA length" end
  if ptype == 7 and len <= 14 then return "PASS length" end
  return nil
end

local function dissect_proxy(tvb, pinfo, tree)
  local t = tree:add(kp, tvb(), "kadpunch proxy session")
  t:add(f.kind, tvb(0, 1), KIND.proxy)
  local ptype, len = tvb(1, 1):uint(), tvb:len()
  if PROXY_TYPES[ptype] == nil then return malformed(t, pinfo, "proxy message type") end
  t:add(f.x_type, tvb(1, 1))
  local info = "Proxy " .. PROXY_TYPES[ptype]
  pinfo.cols.info:set(info)
  local wrong = proxy_length_wrong(ptype, len)
  if wrong then return malformed(t, pinfo, wrong) end
  if ptype == 2 then
    t:add(f.x_version, tvb(2, 1))
    t:add(f.x_key, tvb(4, 32))
    info = info .. " version " .. tvb(2, 1):uint()
  elseif ptype == 3 then
    local n = tvb(6, 2):uint()
    if n == 0 or n > len - 8 then return malformed(t, pinfo, "HELLO: Noise message length") end
    t:add(f.x_sender, tvb(2, 4))
    t:add(f.x_noise_len, tvb(6, 2))
    t:add(f.x_noise, tvb(8, n))
    if len > 8 + n then t:add(f.x_padding, tvb(8 + n, len - 8 - n), len - 8 - n) end
    info = info .. string.format(" sender=0x%08x", tvb(2, 4):uint())
  elseif ptype == 4 then
    t:add(f.x_receiver, tvb(2, 4))
    t:add(f.x_sender, tvb(6, 4))
    t:add(f.x_noise, tvb(10, len - 10))
    info = info .. string.format(" receiver=0x%08x sender=0x%08x", tvb(2, 4):uint(), tvb(6, 4):uint())
  elseif ptype == 5 then
    local reason = tvb(6, 1):uint()
    if PROXY_REASONS[reason] == nil then return malformed(t, pinfo, "REFUSED: reason") end
    t:add(f.x_receiver, tvb(2, 4))
    t:add(f.x_reason, tvb(6, 1))
    info = info .. " (" .. PROXY_REASONS[reason] .. ")"
  elseif ptype == 6 then
    t:add(f.x_receiver, tvb(2, 4))
    t:add(f.x_counter, tvb(6, 8))
    t:add(f.x_sealed, tvb(14, len - 14))
    info = info .. string.format(" receiver=0x%08x counter=%s", tvb(2, 4):uint(),
                                 tostring(tvb(6, 8):uint64()))
  elseif ptype == 7 then
    t:add(f.x_receiver, tvb(2, 4))
    t:add(f.x_token, tvb(6, 8))
    info = info .. string.format(" receiver=0x%08x", tvb(2, 4):uint())
    pinfo.cols.info:set(info)
    -- A stream packet, as the peers sealed it: dissected as one (its Info
    -- follows the PASS's).
    if tvb(14, 1):uint() == 0x41 and len - 14 >= 34 then
      dissect_stream(tvb(14):tvb(), pinfo, t)
      pinfo.cols.info:prepend(info .. " | ")
      return
    end
    return malformed(t, pinfo, "PASS: not a stream packet")
  end
  pinfo.cols.info:set(info)
end

-- ---- Entry ---------------------------------------------------------------------------------

classify = function(tvb)
  local len = tvb:len()
  if len < 2 then return nil end
  local b = tvb(0, 1):uint()
  if b == 0x9b or b == 0x9c then
    -- An array of 11 or 12 whose first element is version 1.
    if tvb(1, 1):uint() == 0x01 then return dissect_dht end
  elseif b == 0x41 and len >= 34 then
    return dissect_stream
  elseif b == 0x50 and len >= 61 then
    return dissect_probe
  elseif b == 0x52 and len == 89 then
    return dissect_relay
  elseif b == 0x58 and len >= PROXY_REFUSED_LEN and PROXY_TYPES[tvb(1, 1):uint()] then
    return dissect_proxy
  end
  return nil
end

function kp.dissector(tvb, pinfo, tree)
  local fn = classify(tvb)
  if not fn then return 0 end
  pinfo.cols.protocol:set("KADPUNCH")
  fn(tvb, pinfo, tree)
  return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
  if not classify(tvb) then return false end
  kp.dissector(tvb, pinfo, tree)
  return true
end

kp:register_heuristic("udp", heuristic)
