// Test upstream: a Go net/http server, standard library only, routed by
// the standard http.ServeMux. scripts/upstreams.sh builds and runs it:
//
//	go-upstream -listen 127.0.0.1:58082
//
// Handlers (the same four on every test upstream):
//
//	/admin, /admin/...          admin
//	/api/admin, /api/admin/...  api-admin
//	/api, /api/...              api
//	anything else               public
//
// ServeMux answers a path that is not clean (doubled slashes, dot segments)
// with a 301 to the clean one instead of calling a handler, as it does in
// any Go app. Each handler answers 200 JSON: the server, the handler that
// matched, the path as Go saw it (r.URL.Path, percent-decoded), the raw
// target as it arrived (r.RequestURI), and every header (names as Go's
// textproto canonicalised them, as every Go app reads them; one pair per
// line received, sorted by name):
//
//	{"server": "go", "handler": "admin", "path": "/admin/x",
//	 "raw": "/%61dmin/x?q=1", "headers": [["Host", "app.example"], ...]}
//
// GET /__received?prefix=P lists, one a line, the X-Request-Id of every
// request that reached the server's handler (also those the mux redirected
// or refused) starting with P, so that a test can count what arrived.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

const receivedPath = "/__received"

// How many request ids are kept (the server runs long).
const keepReceived = 200000

type recorder struct {
	mu  sync.Mutex
	ids []string
}

func (rec *recorder) note(id string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ids) >= keepReceived {
		rec.ids = rec.ids[len(rec.ids)-keepReceived/2:]
	}
	rec.ids = append(rec.ids, id)
}

func (rec *recorder) list(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	var out strings.Builder
	rec.mu.Lock()
	for _, id := range rec.ids {
		if strings.HasPrefix(id, prefix) {
			out.WriteString(id)
			out.WriteByte('\n')
		}
	}
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(out.String()))
}

// wrap notes every request before the mux sees it.
func (rec *recorder) wrap(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == receivedPath {
			rec.list(w, r)
			return
		}
		id := r.Header.Get("X-Request-Id")
		if id == "" {
			id = "-"
		}
		rec.note(id)
		mux.ServeHTTP(w, r)
	})
}

type answer struct {
	Server  string      `json:"server"`
	Handler string      `json:"handler"`
	Path    string      `json:"path"`
	Raw     string      `json:"raw"`
	Headers [][2]string `json:"headers"`
}

func handler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Go moves Host out of the header map; it is a header all the same.
		headers := [][2]string{{"Host", r.Host}}
		names := make([]string, 0, len(r.Header))
		for key := range r.Header {
			names = append(names, key)
		}
		sort.Strings(names)
		for _, key := range names {
			for _, value := range r.Header[key] {
				headers = append(headers, [2]string{key, value})
			}
		}
		body, err := json.Marshal(answer{"go", name, r.URL.Path, r.RequestURI, headers})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:58082", "address to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	for _, route := range []struct{ prefix, name string }{
		{"/admin", "admin"},
		{"/api/admin", "api-admin"},
		{"/api", "api"},
	} {
		mux.HandleFunc(route.prefix, handler(route.name))
		mux.HandleFunc(route.prefix+"/", handler(route.name))
	}
	mux.HandleFunc("/", handler("public"))
	server := &http.Server{
		Addr:              *listen,
		Handler:           (&recorder{}).wrap(mux),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("go upstream listening on %s", *listen)
	log.Fatal(server.ListenAndServe())
}
