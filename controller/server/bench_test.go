package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"strata/controller/server"
)

// BenchmarkGlancePendingFlood: an admin token creates 100 images and never
// uploads them, each with the largest properties the Glance subset takes.
// Reports the controller's heap still in use after a GC (what the flood
// keeps) in MB. The controller runs in this process.
func BenchmarkGlancePendingFlood(b *testing.B) {
	for range b.N {
		c, err := server.Start(context.Background(), server.Config{
			StateDir: b.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Compute: noCompute{},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		token := adminToken(b, c)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		// The largest body each version accepts: 1 MiB of properties as
		// four 250 kB values, else 127 properties of 255 characters.
		large := map[string]string{"name": "flood", "disk_format": "qcow2"}
		for i := range 4 {
			large[fmt.Sprintf("p%d", i)] = strings.Repeat("x", 250<<10)
		}
		most := map[string]string{"name": "flood", "disk_format": "qcow2"}
		for i := range 127 {
			most[fmt.Sprintf("p%d", i)] = strings.Repeat("x", 255)
		}
		accepted := 0
		for range 100 {
			for _, body := range []map[string]string{large, most} {
				data, _ := json.Marshal(body)
				req, _ := http.NewRequest("POST", c.APIURL+"/image/v2/images", strings.NewReader(string(data)))
				req.Header.Set("X-Auth-Token", token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode == 201 {
					accepted++
					break
				}
			}
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "MB-kept")
		b.ReportMetric(float64(accepted), "images-pending")
		c.Stop()
	}
}

func adminToken(b *testing.B, c *server.Controller) string {
	body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}},
		"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}`, c.AdminPassword)
	resp, err := http.Post(c.APIURL+"/v3/auth/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		b.Fatalf("login: HTTP %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Subject-Token")
}
