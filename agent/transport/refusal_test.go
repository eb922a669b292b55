package transport

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"strata/agent/wire"
)

func TestHelloRefusalsOfTheProtocolAreToldApart(t *testing.T) {
	// What a controller of this build answers an agent too new for it.
	if err := helloRefusal(wire.CheckProtocol(wire.ProtocolVersion+1), wire.ProtocolVersion+1); !errors.Is(err, ErrProtocolRefused) ||
		!strings.Contains(err.Error(), "upgrade the controller first") {
		t.Fatalf("current controller's refusal: %v", err)
	}
	// What a controller of protocol 1 answers a protocol 2 hello: it
	// decodes strictly into a Hello without the field.
	v := wire.ProtocolVersion
	payload, _ := json.Marshal(wire.Hello{InstanceID: "i", AgentVersion: "a", BootID: "b", ProtocolVersion: &v})
	var helloV1 struct {
		InstanceID   string `json:"instance_id"`
		AgentVersion string `json:"agent_version"`
		BootID       string `json:"boot_id"`
	}
	decodeErr := wire.DecodeStrict(payload, &helloV1)
	if decodeErr == nil {
		t.Fatal("a protocol 1 controller would take the hello")
	}
	err := helloRefusal("garbled hello: "+decodeErr.Error(), v)
	if !errors.Is(err, ErrProtocolRefused) || !strings.Contains(err.Error(), "the controller predates protocol versions") {
		t.Fatalf("protocol 1 controller's refusal: %v", err)
	}
	// Anything else is an ordinary refusal.
	err = helloRefusal("this key belongs to instance x, not y", v)
	if errors.Is(err, ErrProtocolRefused) || !errors.Is(err, ErrHelloRejected) {
		t.Fatalf("other refusal: %v", err)
	}
}
