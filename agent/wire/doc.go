// Package wire is the one contract between the strata guest agent and the
// controller: the bootstrap document the agent boots from, the messages and
// operation kinds both sides exchange, their framing, the version and
// validation rules, and the key, token and request helpers both ends need.
// It holds the contract only. Each end lives with its owner: the agent's
// outbound SSH client in strata/agent/transport, the controller's SSH
// endpoint (Server, its Store, MemStore) in strata/controller/agentendpoint.
//
// The builder, the agent and the controller meet only here: the controller
// imports this package and nothing else of agent/; the agent and the
// builder import nothing of controller/ (ci/imports_test.go checks it).
// Keep it that way: wire must not import other strata packages, must not
// know about any datastore's internals, and must not grow either end's
// code or controller policy (timeouts that end in ERROR, task state): it
// says what moves, the two sides decide.
//
// Protocol (version 2), all over one SSH connection the agent dials:
//
//   - SSH user "strata-agent". The agent offers its own ed25519 key. An
//     enrolled key authenticates alone. An unknown key gets a partial success
//     and must then present the one-time enrollment token as a password; the
//     server redeems the token and binds the key to the token's instance in
//     one atomic store call. The instance is always derived from the key (or
//     the token), never from anything the agent claims.
//   - Global request "hello@strata-v1" (agent → controller, JSON Hello,
//     stating the protocol version the agent speaks): answered with JSON
//     Welcome naming the instance the key belongs to and the protocol
//     chosen, or refused (see Versions below).
//   - Global request "heartbeat@strata-v1" (agent → controller, JSON
//     Heartbeat): answered true if stored, false if dropped as stale. A
//     controller that takes optional heartbeat fields says so in the
//     payload of its true answer (HeartbeatReply; older controllers send
//     none, older agents ignore it), and only then does the agent send
//     them in that session: users_digest (Redis user drift) is one.
//   - Global request "keepalive@openssh.com", both directions.
//   - Channel "op@strata-v1" (controller → agent), one per operation:
//     the controller writes one framed Operation; the agent answers with a
//     framed OpReply carrying an Ack, then one carrying the Result.
//   - Channel "stream@strata-v1" (agent → controller), opened by a running
//     backup or restore operation for its data, and accepted only for an
//     operation the controller sent this agent and waits on (the rules are
//     in backups.go).
//
// Frames are a 4-byte big-endian length followed by that many bytes of JSON,
// at most MaxMessageSize bytes.
//
// Versions (protocol.go). An agent speaks one protocol, ProtocolVersion
// of its build; a controller serves MinProtocolVersion (one back) to
// ProtocolVersion, so an instance on last release's image keeps working
// after the controller is upgraded. Upgrade controllers first, then
// rebuild instances onto new images. The controller refuses a Hello of
// any other protocol with a reply starting ProtocolRefused (logged and
// recorded as the instance's fault; the key stays enrolled, so a rebuild
// onto a right image fixes it), and an agent so refused retries only at
// its longest backoff. The controller never sends an agent a kind newer
// than the agent's protocol (Class.Since): such an operation ends
// not_supported, unsent.
//
//   - Protocol 1: everything above, without versions: Hello and Welcome
//     carry no protocol_version (both sides decode strictly, so a
//     controller must not send a protocol 1 agent the field).
//   - Protocol 2: Hello carries protocol_version, Welcome the one chosen.
//     Every kind of protocol 1 is unchanged; upgrade_datastore (the
//     datastore version upgrade's step) and rejoin_replication (a former
//     PostgreSQL primary following the new one) are new in protocol 2.
//     export_users and import_users (a Redis source's users carried to
//     its replicas) were added to protocol 2 later: an agent of protocol
//     2 built before them answers not_supported ("does not know the
//     operation"), which the controller logs and records, never failing
//     the user's request for it.
package wire
