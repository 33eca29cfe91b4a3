// Package site serves the edge's pages for browsers: the sign-in form and the
// signed-in page, chat rooms, a page for any socket route (/app/P/ for /ws/P/),
// sign-in and sign-out, /api/session, and the pages' static files.
package site

import (
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
	"github.com/gatehouse/gatehouse/edgesvc/internal/public"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// Site is the pages' handler set.
type Site struct {
	auth *auth.Authority
	face *public.Face
	cop  *http.CrossOriginProtection
	log  *slog.Logger
	mux  *http.ServeMux // the edge's, to tell which socket routes exist
}

// New returns the site. Forms posted from another origin are refused unless it is in
// face.AllowedOrigins (lower case, no trailing slash); with a public URL, also a form
// whose Origin has another scheme or host.
func New(a *auth.Authority, face *public.Face, log *slog.Logger) *Site {
	s := &Site{auth: a, face: face, cop: http.NewCrossOriginProtection(), log: log}
	for _, o := range face.AllowedOrigins {
		if err := s.cop.AddTrustedOrigin(o); err != nil {
			log.Warn("ignoring allowed origin", "origin", o, "err", err)
		}
	}
	return s
}

// Register adds the site's routes to mux.
func (s *Site) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(webFS, "web")
	s.mux = mux
	mux.HandleFunc("GET /{$}", s.handlePage)
	mux.HandleFunc("POST /login", s.handleLogin)
	mux.HandleFunc("POST /logout", s.handleLogout)
	mux.HandleFunc("GET /api/session", s.handleAPISession)
	mux.HandleFunc("GET /chat/{room}/{$}", s.handleChat)
	mux.HandleFunc("GET /app/{path...}", s.handleSocketPage)
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static)))
}

//go:embed web
var webFS embed.FS

var (
	pageTmpl   = template.Must(template.ParseFS(webFS, "web/index.html", "web/parts.html"))
	chatTmpl   = template.Must(template.ParseFS(webFS, "web/chat.html", "web/parts.html"))
	socketTmpl = template.Must(template.ParseFS(webFS, "web/socket.html", "web/parts.html"))
)

// socketPath is what a page's socket path may be (app.js holds the same rule).
var socketPath = regexp.MustCompile(`^/ws/[A-Za-z0-9._/-]+/$`)

type pageData struct {
	User     *auth.User
	Error    string
	Notice   string
	Username string
}

// contentSecurityPolicy allows only the edge's own scripts, styles and sockets.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

func staticHandler(files fs.FS) http.Handler {
	fsrv := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		fsrv.ServeHTTP(w, r)
	})
}

func (s *Site) render(w http.ResponseWriter, code int, d pageData) {
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := pageTmpl.Execute(w, d); err != nil {
		s.log.Error("render page", "err", err)
	}
}

// handleChat shows a chat room to a signed-in user; others go to the sign-in page. A
// room name outside the rule (1–95 of ASCII letters, digits, '-', '_', '.') is 404.
func (s *Site) handleChat(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	if len(room) > 95 || !registry.ValidGroup("chat."+room) || room == "." || room == ".." {
		w.Header().Set("Gatehouse-Reason", "NO_ROUTE")
		http.Error(w, "no such room: names are 1 to 95 characters of ASCII letters, digits, '-', '_' and '.'", http.StatusNotFound)
		return
	}
	s.signedIn(w, r, chatTmpl, func(u *auth.User) any {
		return struct {
			User *auth.User
			Room string
		}{u, room}
	})
}

// handleSocketPage shows a signed-in user a page that opens the socket route /ws/P/
// for /app/P/ and shows what it says: a page for a remote consumer's route, with no
// page of its own to write. A path that is no socket route is 404.
func (s *Site) handleSocketPage(w http.ResponseWriter, r *http.Request) {
	path := "/ws/" + r.PathValue("path")
	probe := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: path}, Host: r.Host, Header: http.Header{}}
	// Only a clean path: the browser would not open /ws/a//b/ as the mux finds it.
	clean := socketPath.MatchString(path) && !strings.Contains(path, "//") && !strings.Contains(path, "/../") && !strings.Contains(path, "/./")
	if _, pattern := s.mux.Handler(probe); !clean || !strings.HasPrefix(pattern, "GET /ws/") {
		w.Header().Set("Gatehouse-Reason", "NO_ROUTE")
		http.Error(w, "no socket route at "+path, http.StatusNotFound)
		return
	}
	s.signedIn(w, r, socketTmpl, func(u *auth.User) any {
		return struct {
			User   *auth.User
			Socket string
		}{u, path}
	})
}

// signedIn renders tmpl with data(user) for a signed-in user; others go to the
// sign-in page.
func (s *Site) signedIn(w http.ResponseWriter, r *http.Request, tmpl *template.Template, data func(*auth.User) any) {
	u, _, code, _ := s.sessionUser(r)
	switch code {
	case http.StatusOK:
		securityHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := tmpl.Execute(w, data(&u)); err != nil {
			s.log.Error("render page", "page", tmpl.Name(), "err", err)
		}
	case http.StatusUnauthorized:
		http.Redirect(w, r, "/", http.StatusSeeOther)
	default:
		s.render(w, code, pageData{Error: msgUnavailable})
	}
}

// sessionUser returns the user of the request's session, or nil, the HTTP status to
// answer with (401 for no or an invalid session, 503 if authsvc failed) and the reason.
// It answers from the session cache when it can, as a handshake does, and fills it
// otherwise, so the page's socket usually connects without a call to authsvc.
func (s *Site) sessionUser(r *http.Request) (auth.User, auth.Session, int, string) {
	tok, ok := auth.Credential(r, s.face.CookieName(r))
	if !ok {
		return auth.User{}, auth.Session{}, http.StatusUnauthorized, "NO_CREDENTIAL"
	}
	u, sess, err := s.auth.Authorize(r.Context(), tok)
	if err == nil {
		return u, sess, http.StatusOK, ""
	}
	code, reason := auth.Refusal(err)
	if code != http.StatusUnauthorized {
		s.log.WarnContext(r.Context(), "ValidateSession failed", "code", status.Code(err).String())
	}
	return u, sess, code, reason
}

func (s *Site) handlePage(w http.ResponseWriter, r *http.Request) {
	u, _, code, _ := s.sessionUser(r)
	f, hasFlash := s.takeFlash(w, r)
	switch code {
	case http.StatusOK:
		s.render(w, http.StatusOK, pageData{User: &u})
	case http.StatusUnauthorized:
		if _, err := r.Cookie(s.face.CookieName(r)); err == nil {
			s.clearCookie(w, r) // stale: the session ended
		}
		d := pageData{}
		if hasFlash {
			d.Username = f.username
			if f.notice {
				d.Notice = f.message
			} else {
				d.Error = f.message
			}
		}
		s.render(w, http.StatusOK, d)
	default:
		s.render(w, code, pageData{Error: msgUnavailable})
	}
}

// maxFormBytes bounds the login form body.
const maxFormBytes = 16 << 10

// parseLoginForm reads username and password from an urlencoded POST body of at most
// 16 KiB. It returns an error a person can read when the form is unusable.
func parseLoginForm(w http.ResponseWriter, r *http.Request) (username, password string, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return "", "", errFormUnreadable
	}
	username, password = r.PostForm.Get("username"), r.PostForm.Get("password")
	if username == "" || password == "" {
		return username, "", errFormIncomplete
	}
	return username, password, nil
}

type formError string

func (e formError) Error() string { return string(e) }

const (
	errFormUnreadable = formError("The form could not be read.")
	errFormIncomplete = formError("Enter a username and a password.")
)

// What a failed sign-in tells the person.
const (
	msgInvalid     = "Invalid username or password."
	msgTooMany     = "Too many failed sign-ins. Wait a few minutes and try again."
	msgTooLong     = "Username or password is too long."
	msgBadUsername = "That username has characters that are not allowed in a username."
	msgUnavailable = "The sign-in service is unavailable right now. Try again shortly."
)

func (s *Site) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := s.checkOrigin(r); err != nil {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	username, password, err := parseLoginForm(w, r)
	if err != nil {
		s.refuseLogin(w, r, http.StatusBadRequest, err.Error(), username)
		return
	}
	tok, _, sess, err := s.auth.Login(r.Context(), username, password, r.UserAgent(), s.face.ClientAddr(r))
	if err != nil {
		code, msg := http.StatusServiceUnavailable, msgUnavailable
		switch status.Code(err) {
		case codes.Unauthenticated:
			code, msg = http.StatusUnauthorized, msgInvalid
		case codes.ResourceExhausted:
			code, msg = http.StatusTooManyRequests, msgTooMany
			if retry := auth.Details(err).Retry; retry > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(retry.Round(time.Second)/time.Second)))
			}
		case codes.InvalidArgument:
			code, msg = http.StatusBadRequest, msgTooLong
			if auth.Details(err).Reason == "INVALID_USERNAME" {
				msg, username = msgBadUsername, ""
			}
		default:
			s.log.WarnContext(r.Context(), "Login failed", "code", status.Code(err).String())
		}
		s.refuseLogin(w, r, code, msg, username)
		return
	}
	// The session this sign-in replaces ends: a browser holds one, and an old one left
	// alive would outlast a sign-in meant to start afresh (on a shared computer, say).
	if old, ok := auth.Credential(r, s.face.CookieName(r)); ok && old != tok {
		if err := s.auth.Logout(r.Context(), old); err != nil && status.Code(err) != codes.Unauthenticated {
			s.log.WarnContext(r.Context(), "ending the replaced session failed", "code", status.Code(err).String())
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.face.CookieName(r), Value: tok, Path: "/",
		Expires:  sess.ExpiresAt,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.face.Secure(r),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Site) handleLogout(w http.ResponseWriter, r *http.Request) {
	if err := s.checkOrigin(r); err != nil {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	if tok, ok := auth.Credential(r, s.face.CookieName(r)); ok {
		if err := s.auth.Logout(r.Context(), tok); err != nil && status.Code(err) != codes.Unauthenticated {
			s.log.WarnContext(r.Context(), "Logout failed", "code", status.Code(err).String())
			s.render(w, http.StatusServiceUnavailable, pageData{Error: "Could not sign out: the sign-in service is unavailable. Try again."})
			return
		}
	}
	s.clearCookie(w, r)
	s.setFlash(w, r, flash{notice: true, message: msgSignedOut})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// refuseLogin answers a sign-in that failed. A browser's form post (a navigation) is
// redirected to the sign-in page, which shows the message once (redirect-after-post:
// reloading that page does not post the password again); other clients get the
// status with the form.
func (s *Site) refuseLogin(w http.ResponseWriter, r *http.Request, code int, msg, username string) {
	if r.Header.Get("Sec-Fetch-Mode") == "navigate" && flashMessages[msg] {
		s.setFlash(w, r, flash{message: msg, username: username})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, code, pageData{Error: msg, Username: username})
}

// flash is a message for the next page only, carried in a short-lived cookie.
type flash struct {
	notice   bool // a notice rather than an error
	message  string
	username string // to fill the form with again
}

const (
	flashCookie  = "gatehouse_flash"
	msgSignedOut = "You have signed out."
)

// flashMessages are the messages a flash may carry: the page shows only these, so a
// cookie set by anyone else cannot put words on it.
var flashMessages = map[string]bool{}

func init() {
	for _, m := range []string{
		string(errFormUnreadable), string(errFormIncomplete), msgSignedOut,
		msgInvalid, msgTooMany, msgTooLong, msgBadUsername, msgUnavailable,
	} {
		flashMessages[m] = true
	}
}

func (s *Site) setFlash(w http.ResponseWriter, r *http.Request, f flash) {
	kind := "e"
	if f.notice {
		kind = "n"
	}
	v := url.Values{"k": {kind}, "m": {f.message}, "u": {f.username}}
	http.SetCookie(w, &http.Cookie{
		Name: flashCookie, Value: v.Encode(), Path: "/", MaxAge: 60,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.face.Secure(r),
	})
}

// takeFlash returns the flash the request carries, if any, and clears it.
func (s *Site) takeFlash(w http.ResponseWriter, r *http.Request) (flash, bool) {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return flash{}, false
	}
	http.SetCookie(w, &http.Cookie{
		Name: flashCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.face.Secure(r),
	})
	v, err := url.ParseQuery(c.Value)
	if err != nil || !flashMessages[v.Get("m")] {
		return flash{}, false
	}
	return flash{notice: v.Get("k") == "n", message: v.Get("m"), username: v.Get("u")}, true
}

func (s *Site) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: s.face.CookieName(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.face.Secure(r),
	})
}

func (s *Site) handleAPISession(w http.ResponseWriter, r *http.Request) {
	u, sess, code, reason := s.sessionUser(r)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	var body any
	switch code {
	case http.StatusOK:
		body = map[string]any{
			"user":    map[string]any{"id": u.ID, "username": u.Username},
			"session": map[string]any{"id": sess.ID, "expires_at": sess.ExpiresAt},
		}
	case http.StatusUnauthorized:
		body = map[string]string{"error": "not signed in", "reason": reason}
	default:
		body = map[string]string{"error": "authentication service unavailable", "reason": reason}
	}
	_ = json.NewEncoder(w).Encode(body)
}

// checkOrigin refuses a cross-origin form. With a public URL, a form with an Origin
// is the edge's own when that Origin has the public URL's scheme and host (or is
// allowed): behind a proxy the Host header may be the proxy's business. Otherwise
// net/http's check decides (Sec-Fetch-Site, or Origin against Host).
func (s *Site) checkOrigin(r *http.Request) error {
	if s.face.URL != nil && r.Header.Get("Origin") != "" {
		if s.face.OriginAllowed(r) {
			return nil
		}
		return errors.New("cross-origin request")
	}
	return s.cop.Check(r)
}
