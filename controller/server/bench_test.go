package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkValidLoginUnderBadLoginFlood: 8 clients, each from its own
// loopback address, send wrong passwords for made-up users as fast as they
// are answered, while admin logs in from another address 20 times. Reports
// the valid logins' latency (p50, p95, max, in ms) next to the same
// without the flood, the flood's attempts per second and the share
// answered 429. The password hashes have bcrypt's default cost, as in
// production.
func BenchmarkValidLoginUnderBadLoginFlood(b *testing.B) {
	for range b.N {
		c, err := server.Start(context.Background(), server.Config{
			StateDir: b.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", Compute: noCompute{},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		valid := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":%q}}}}}`, c.AdminPassword)
		login := func(client *http.Client, body string) (int, time.Duration) {
			start := time.Now()
			resp, err := client.Post(c.APIURL+"/v3/auth/tokens", "application/json", strings.NewReader(body))
			if err != nil {
				return 0, time.Since(start)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode, time.Since(start)
		}
		measure := func() []time.Duration {
			var ds []time.Duration
			client := clientFrom("127.0.0.100")
			for range 20 {
				code, d := login(client, valid)
				if code != 201 {
					b.Fatalf("valid login: HTTP %d", code)
				}
				ds = append(ds, d)
			}
			slices.Sort(ds)
			return ds
		}
		quiet := measure()

		var attempts, limited atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				client := clientFrom(fmt.Sprintf("127.0.0.%d", g+1))
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					body := fmt.Sprintf(`{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"guess-%d-%d","domain":{"name":"Default"},"password":"wrong"}}}}}`, g, n)
					code, _ := login(client, body)
					attempts.Add(1)
					if code == 429 {
						limited.Add(1)
					}
				}
			})
		}
		time.Sleep(2 * time.Second)
		start := time.Now()
		flood := measure()
		secs := time.Since(start).Seconds()
		before := attempts.Load()
		close(stop)
		wg.Wait()
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(quiet[len(quiet)/2]), "ms-p50-quiet")
		b.ReportMetric(ms(flood[len(flood)/2]), "ms-p50-flood")
		b.ReportMetric(ms(flood[len(flood)*95/100]), "ms-p95-flood")
		b.ReportMetric(ms(flood[len(flood)-1]), "ms-max-flood")
		b.ReportMetric(float64(before)/(secs+2), "bad-logins/s")
		b.ReportMetric(100*float64(limited.Load())/float64(max(attempts.Load(), 1)), "%-429")
		c.Stop()
	}
}

// clientFrom is an HTTP client whose connections come from a given
// loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}
