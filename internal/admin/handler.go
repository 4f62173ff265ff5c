package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/store"
)

// Options are what the admin server serves.
type Options struct {
	Metrics *Metrics
	// Status is /status.
	Status func() Status
	// Digest is /digest: the store's digest at its applied position,
	// whole and per mailbox (what `twinbox verify --peer` compares).
	Digest func() (store.Digest, error)
	// Healthy is /healthz: nil, or why the node is not.
	Healthy func() error
	// Command runs an operator's role command (POST /failover/...); nil
	// when the node does not run failover.
	Command func(ctx context.Context, c failover.Command) error
	// ConfirmFence records that the peer is off (POST
	// /failover/fence-confirm); nil unless the fence device is manual.
	ConfirmFence func()
	// Pprof serves Go's profiler under /debug/pprof/ (admin_pprof).
	Pprof bool
	// Import serves `twinbox import` under /import/ (package migrate);
	// nil: not served.
	Import http.Handler
}

// Handler is the operator's API: /healthz, /status, /digest, /metrics,
// the role commands and, if asked, Go's profiler. It checks no
// credentials: serve it behind Local (the unix socket) or RequireToken
// (TCP).
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	handleOpen(mux, o)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(o.Status())
	})
	mux.HandleFunc("GET /digest", func(w http.ResponseWriter, r *http.Request) {
		d, err := o.Digest()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d)
	})
	if o.Pprof {
		// Go's profiler (admin_pprof): curl --unix-socket DATA/admin.sock
		// http://twinbox/debug/pprof/heap > heap.pb; go tool pprof heap.pb
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if o.Command != nil {
		handleCommands(mux, o)
	}
	if o.Import != nil {
		mux.Handle("POST /import/", o.Import)
	}
	return mux
}

// MetricsHandler serves only what anyone who can reach metrics_addr may
// read: /metrics (Prometheus) and /healthz. It says nothing of users or
// mailboxes and changes nothing.
func MetricsHandler(o Options) http.Handler {
	mux := http.NewServeMux()
	handleOpen(mux, o)
	return mux
}

// handleOpen serves /healthz and /metrics.
func handleOpen(mux *http.ServeMux, o Options) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := o.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{Registry: o.Metrics.Registry}))
}

// handleCommands serves the operator's commands: POST
// /failover/switchover, /failover/promote[?force=1], /failover/demote and
// /failover/fence-confirm.
func handleCommands(mux *http.ServeMux, o Options) {
	cmd := func(route failover.Command) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			// Per request: a forced promote must not make the next
			// plain one forced too.
			c := route
			if c == failover.CmdPromote && r.URL.Query().Get("force") != "" {
				c = failover.CmdPromoteForce
			}
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			if err := o.Command(ctx, c); err != nil {
				code := http.StatusConflict
				if errors.Is(err, pair.ErrNoFailover) {
					code = http.StatusNotFound
				}
				http.Error(w, err.Error(), code)
				return
			}
			fmt.Fprintf(w, "%s: accepted\n", c)
		}
	}
	mux.HandleFunc("POST /failover/switchover", cmd(failover.CmdSwitchover))
	mux.HandleFunc("POST /failover/promote", cmd(failover.CmdPromote))
	mux.HandleFunc("POST /failover/demote", cmd(failover.CmdDemote))
	mux.HandleFunc("POST /failover/fence-confirm", func(w http.ResponseWriter, r *http.Request) {
		if o.ConfirmFence == nil {
			http.Error(w, "fence confirm: this node's fence_agent is not manual", http.StatusConflict)
			return
		}
		o.ConfirmFence()
		fmt.Fprintln(w, "fence confirm: the peer is recorded as off")
	})
}
