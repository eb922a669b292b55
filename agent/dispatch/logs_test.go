package dispatch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"testing"

	"strata/agent/datastore"
	"strata/agent/datastore/mariadb/mariadbtest"
	"strata/agent/dispatch"
	"strata/agent/wire"
)

// bufStream is a data channel into memory.
type bufStream struct {
	bytes.Buffer
	closedWrite bool
}

func (b *bufStream) CloseWrite() error { b.closedWrite = true; return nil }
func (b *bufStream) Close() error      { return nil }

type bufStreams struct{ opened map[int]*bufStream }

func (s *bufStreams) OpenStream(_ context.Context, _ string, index int) (dispatch.Stream, error) {
	st := &bufStream{}
	s.opened[index] = st
	return st, nil
}

func TestPublishLogStreamsTheWholeFileAndSetLogSwitches(t *testing.T) {
	inst, _ := mariadbtest.PreparedT(t, wire.PrepareArgs{})
	streams := &bufStreams{opened: map[int]*bufStream{}}
	d := &dispatch.Dispatcher{Manager: inst.Manager, AgentLog: fakeAgentLog{}, Streams: streams}

	var res wire.PublishLogResult
	if err := run(t, d, wire.KindPublishLog, `{"name":"error"}`).Decode(&res); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(inst.Config.ErrorLog)
	if err != nil {
		t.Fatal(err)
	}
	got := streams.opened[0]
	if got == nil || !got.closedWrite {
		t.Fatalf("stream 0 not opened and ended: %+v", got)
	}
	// The server may append after the publish read the file: what was
	// sent is a prefix of the file now, and the digest matches it.
	sent := got.Bytes()
	sum := sha256.Sum256(sent)
	if len(sent) == 0 || !bytes.HasPrefix(want, sent) || res.Stream.Bytes != int64(len(sent)) || res.Stream.SHA256 != wire.SHA256Hex(sum[:]) {
		t.Fatalf("published %d bytes (digest %+v) of a %d-byte log", len(sent), res.Stream, len(want))
	}
	if res.Lines != int64(bytes.Count(sent, []byte("\n"))) || res.Lines == 0 {
		t.Fatalf("lines = %d, the stream holds %d newlines", res.Lines, bytes.Count(sent, []byte("\n")))
	}
	// The agent's own log (the journal) is published as its last lines.
	if err := run(t, d, wire.KindPublishLog, `{"name":"agent"}`).Decode(&res); err != nil {
		t.Fatal(err)
	}
	if got := streams.opened[0].String(); got != "agent line\n" || res.Lines != 1 || res.Stream.Bytes != int64(len(got)) {
		t.Fatalf("agent log published %q as %+v", got, res)
	}
	wantError(t, run(t, d, wire.KindPublishLog, `{"name":"../../etc/shadow"}`), wire.CodeNotFound, "no log named")
	wantError(t, run(t, d, wire.KindPublishLog, `{"name":"error","offset":3}`), wire.CodeInvalidArgument, "offset")

	var info wire.LogInfo
	if err := run(t, d, wire.KindSetLog, `{"name":"slow_query","enable":true}`).Decode(&info); err != nil || !info.Enabled {
		t.Fatalf("set_log on: %+v %v", info, err)
	}
	if err := run(t, d, wire.KindSetLog, `{"name":"slow_query","enable":false}`).Decode(&info); err != nil || info.Enabled {
		t.Fatalf("set_log off: %+v %v", info, err)
	}
	wantError(t, run(t, d, wire.KindSetLog, `{"name":"agent","enable":true}`), wire.CodeFailedPrecondition, "always on")
	wantError(t, run(t, d, wire.KindSetLog, `{"name":"error","enable":true}`), wire.CodeFailedPrecondition, "always on")
	wantError(t, run(t, d, wire.KindSetLog, `{"name":"nope","enable":true}`), wire.CodeNotFound, "no log named")
}

// sysOnly is a manager whose one log cannot be switched (Redis's shape).
type sysOnly struct{ datastore.Unsupported }

func (sysOnly) Logs(context.Context) ([]wire.LogInfo, error) {
	return []wire.LogInfo{{Name: "redis", Type: "datastore", Enabled: true}}, nil
}

func TestSetLogOnADatastoreWithoutSwitchesSaysSo(t *testing.T) {
	d := &dispatch.Dispatcher{Manager: sysOnly{datastore.Unsupported{Datastore: "redis"}}, Datastore: "redis"}
	wantError(t, run(t, d, wire.KindSetLog, `{"name":"redis","enable":true}`), wire.CodeFailedPrecondition, "redis has no log that can be enabled or disabled")
	wantError(t, run(t, d, wire.KindSetLog, `{"name":"other","enable":true}`), wire.CodeNotFound, "no log named")
	wantError(t, run(t, d, wire.KindPublishLog, `{"name":"redis"}`), wire.CodeNotSupported, "cannot publish")
}
