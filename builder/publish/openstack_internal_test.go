//go:build openstack

package publish

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"strata/ci/openstack/ostest"
)

// TestRealTroveAnswers400ForAnUnknownImage: the Trove management client
// against trove-api itself: a version booting an image Glance does not
// have is refused with 400 and the message, and nothing is created.
func TestRealTroveAnswers400ForAnUnknownImage(t *testing.T) {
	s := ostest.Shared(t)
	t.Setenv("OS_CLIENT_CONFIG_FILE", s.CloudsYAML)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sess, err := authenticate(ctx, ostest.Cloud)
	if err != nil {
		t.Fatal(err)
	}
	trove, err := sess.mgmt("trove", s.TroveURL, false)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = trove.register(ctx, versionSpec{Datastore: "mariadb", Name: "unknown-image", Manager: "mariadb",
		Image: "5c6f0b1e-0000-4000-8000-000000000001", Port: 3306}, os.Stderr)
	var se *ServiceError
	if !errors.As(err, &se) || se.Service != "trove" || se.Status != 400 || se.Message != "Image 5c6f0b1e-0000-4000-8000-000000000001 cannot be found." {
		t.Fatalf("error: %#v (%v)", err, err)
	}
	vs, err := trove.versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Name == "unknown-image" {
			t.Fatalf("Trove created the refused version: %+v", v)
		}
	}
}
