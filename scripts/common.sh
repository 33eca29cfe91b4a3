# Sourced by run.sh (make run) and cluster.sh (make cluster), from the checkout's root:
# the database, the secrets kept in .run/, the migrations and the demo user, and
# stopping what was started.

# PostgreSQL: DATABASE_URL, or the private cluster scripts/pg.sh starts (pgdir is
# then where it lives).
pgdir=
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh)
  pgdir=$(scripts/pg.sh dir)
fi
export DATABASE_URL

# The tokens (admin, front-end, edge API) and the demo password are made once and kept
# in .run/ (git-ignored), so they stay the same from run to run until `make clean`.
newsecret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
for f in admin-token api-token frontend-token; do
  [ -s ".run/$f" ] || { newsecret >".run/$f"; chmod 600 ".run/$f"; }
done
[ -s .run/demo-password ] || { newsecret | head -c 16 >.run/demo-password; chmod 600 .run/demo-password; }

bin/authsvc migrate 2>/dev/null
case "$(bin/authsvc demo-user demo <.run/demo-password)" in
  created) demo="user demo, password $(cat .run/demo-password) (created now)" ;;
  *)       demo="user demo, password $(cat .run/demo-password) (if you have not changed it; users already existed)" ;;
esac

# pids are what was started, in order; stop ends them last first (the edges before
# authsvc, so that sockets get 1001 from a live edge), at Ctrl-C or any exit.
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop INT TERM EXIT
