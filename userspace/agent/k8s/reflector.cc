#include "userspace/agent/k8s/reflector.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/agent/k8s/objects.h"
#include "userspace/agent/utf8.h"

namespace ringmesh::agent::k8s {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// Server text in messages: short, and valid UTF-8 whatever was sent (an
// error page from a proxy in front of the API server is often Latin-1 HTML;
// Health() ends up in the agent's JSON status file).
std::string Preview(std::string_view s) { return Utf8Preview(s, 200); }

// The message of a metav1.Status body, else the body itself.
std::string StatusMessage(const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_object()) {
    auto it = j.find("message");
    if (it != j.end() && it->is_string()) return Utf8Preview(it->get_ref<const std::string&>(), 1024);
  }
  return Preview(body);
}

std::string Seconds(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

}  // namespace

Reflector::Reflector(ResourceSpec spec, const ApiConfig& api, TokenSource* token, ReflectorOptions opts,
                     ObjectStore* store)
    : spec_(std::move(spec)),
      server_(api.server),
      token_(token),
      opts_(opts),
      store_(store),
      http_(api.tls),
      rng_(std::random_device{}()) {}

Reflector::~Reflector() { Stop(); }

void Reflector::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void Reflector::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  http_.Interrupt();
  if (thread_.joinable()) thread_.join();
}

ReflectorState Reflector::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string Reflector::Url(const std::string& query) const {
  std::string url = absl::StrCat(server_, spec_.path, "?", query);
  if (!spec_.field_selector.empty())
    absl::StrAppend(&url, "&fieldSelector=", UrlEncode(spec_.field_selector));
  return url;
}

std::chrono::milliseconds Reflector::NextBackoff() {
  double base = static_cast<double>(opts_.backoff_initial.count()) * std::pow(2.0, std::min(failures_, 30));
  ++failures_;
  std::uniform_real_distribution<double> jitter(0.0, std::max(0.0, opts_.backoff_jitter));
  double ms = std::min(base * (1.0 + jitter(rng_)), static_cast<double>(opts_.backoff_max.count()));
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

void Reflector::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
}

void Reflector::SetError(const absl::Status& st, std::chrono::milliseconds retry_in) {
  std::lock_guard lock(mu_);
  state_.connected = false;
  state_.error = SanitizeUtf8(std::string(st.message()));
  state_.retry_at = Clock::now() + retry_in;
}

absl::StatusOr<HttpResult> Reflector::Get(const std::string& query, std::chrono::milliseconds total_timeout,
                                          const std::function<bool(std::string_view)>& on_body) {
  auto token = token_->Get();
  if (!token.ok()) return token.status();
  HttpRequest req;
  req.url = Url(query);
  req.headers = {"Accept: application/json", "User-Agent: ringmesh-agent"};
  if (!token->empty()) req.headers.push_back(absl::StrCat("Authorization: Bearer ", *token));
  req.connect_timeout = opts_.connect_timeout;
  req.stall_timeout = opts_.stall_timeout;
  req.total_timeout = total_timeout;
  if (total_timeout.count() == 0) {
    // A watch: it is open (and the last failure is over) once the headers
    // of a 200 arrive, even if the first event takes a minute.
    req.on_headers = [this](int status) {
      if (status != 200) return;
      std::lock_guard lock(mu_);
      state_.connected = true;
      state_.error.clear();
      ++state_.watches;
    };
  }
  return http_.Get(req, on_body);
}

absl::Status Reflector::HttpError(const std::string& what, const HttpResult& res) {
  std::string msg =
      absl::StrCat(what, " ", spec_.kind, ": HTTP ", res.status, ": ", StatusMessage(res.error_body));
  if (res.status == 401) {
    // Most likely a rotated service-account token: read the file again now
    // rather than at the next periodic refresh.
    token_->Invalidate();
    if (!token_->file().empty()) absl::StrAppend(&msg, " (re-reading token ", token_->file(), ")");
    return absl::UnauthenticatedError(msg);
  }
  if (res.status == 403) return absl::PermissionDeniedError(absl::StrCat(msg, " (check the agent's RBAC)"));
  return absl::UnavailableError(msg);
}

absl::Status Reflector::List() {
  store_->BeginList();
  std::string rv;
  size_t count = 0;
  auto st = ListPages(&rv, &count);
  if (!st.ok()) {
    store_->AbortList();
    return st;
  }
  store_->EndList();
  rv_ = rv;
  std::lock_guard lock(mu_);
  state_.synced = true;
  state_.error.clear();
  state_.resource_version = rv;
  ++state_.lists;
  spdlog::debug("listed {} {} objects at resourceVersion {}", count, spec_.kind, rv);
  return absl::OkStatus();
}

absl::Status Reflector::ListPages(std::string* rv, size_t* count) {
  std::string cont;
  size_t total = 0;
  const size_t max_total = spec_.max_list_bytes != 0 ? spec_.max_list_bytes : opts_.max_list_bytes;
  // Each page is one request; a list of a 100k-object cluster at 500 per
  // page is 200 pages, so this bound only stops a server that loops.
  for (int page = 0; page < 100'000; ++page) {
    std::string query = absl::StrCat("limit=", opts_.page_size);
    if (!cont.empty()) absl::StrAppend(&query, "&continue=", UrlEncode(cont));
    std::string body;
    bool too_big = false;
    auto res = Get(query, opts_.list_timeout, [&](std::string_view chunk) {
      total += chunk.size();
      if (total > max_total || body.size() + chunk.size() > opts_.max_list_bytes) {
        // Stop reading: the rest is never buffered, the connection closes.
        too_big = true;
        return false;
      }
      body.append(chunk);
      return true;
    });
    if (!res.ok()) {
      if (too_big) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "list ", spec_.kind, ": more than max_list_bytes (", max_total, " bytes in all, ",
            opts_.max_list_bytes,
            " in one page); stopped reading (raise --k8s-max-list-bytes if the cluster is that big)"));
      }
      if (absl::IsCancelled(res.status())) return res.status();
      return absl::Status(res.status().code(),
                          absl::StrCat("list ", spec_.kind, ": ", res.status().message()));
    }
    if (res->status == 410 && !cont.empty()) {
      // The continue token expired mid-list: start over from a fresh read.
      spdlog::info("list {}: continue token expired, listing again", spec_.kind);
      store_->BeginList();
      *count = 0;
      cont.clear();
      continue;
    }
    if (res->status != 200) return HttpError("list", *res);

    // Each element of the top-level "items" array goes to the store as soon
    // as it is parsed and is then dropped, so the page never exists as a
    // whole JSON tree; metadata (resourceVersion, continue) is kept.
    std::string top_key;
    bool in_items = false, items_not_array = false;
    auto on_event = [&](int depth, Json::parse_event_t ev, Json& parsed) {
      using Event = Json::parse_event_t;
      if (depth == 1) {
        if (ev == Event::key) {
          top_key = parsed.is_string() ? parsed.get<std::string>() : "";
        } else if (top_key == "items") {
          if (ev == Event::array_start) in_items = true;
          if (ev == Event::array_end) in_items = false;
          if (ev == Event::object_end || (ev == Event::value && !parsed.is_null())) items_not_array = true;
        }
        return true;
      }
      if (depth == 2 && in_items &&
          (ev == Event::object_end || ev == Event::array_end || ev == Event::value)) {
        store_->AddListItem(parsed);
        ++*count;
        return false;  // discard it from the tree
      }
      return true;
    };
    Json j = Json::parse(body, on_event, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::DataLossError(
          absl::StrCat("list ", spec_.kind, ": response is not a JSON object: ", Preview(body)));
    }
    if (items_not_array)
      return absl::DataLossError(absl::StrCat("list ", spec_.kind, ": items is not an array"));
    auto md = j.find("metadata");
    if (md != j.end() && md->is_object()) {
      auto r = md->find("resourceVersion");
      *rv = r != md->end() && r->is_string() ? r->get<std::string>() : "";
      auto c = md->find("continue");
      cont = c != md->end() && c->is_string() ? c->get<std::string>() : "";
    } else {
      rv->clear();
      cont.clear();
    }
    if (cont.empty()) break;
  }
  if (rv->empty())
    return absl::DataLossError(absl::StrCat("list ", spec_.kind, ": no metadata.resourceVersion"));
  return absl::OkStatus();
}

absl::StatusOr<Reflector::WatchEnd> Reflector::Watch(bool* made_progress) {
  std::uniform_int_distribution<int64_t> pick(
      opts_.watch_timeout_min.count(), std::max(opts_.watch_timeout_min, opts_.watch_timeout_max).count());
  std::string query = absl::StrCat("watch=1&allowWatchBookmarks=true&resourceVersion=", UrlEncode(rv_),
                                   "&timeoutSeconds=", pick(rng_));
  std::string buf;
  std::optional<WatchEnd> end;
  absl::Status stream_error;

  // One line of the stream is one event (the API server frames watch events
  // as newline-terminated JSON objects).
  auto handle = [&](std::string_view line) -> bool {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) return true;
    Json ev = Json::parse(line, nullptr, false);
    const Json* type = nullptr;
    const Json* obj = nullptr;
    if (ev.is_object()) {
      auto t = ev.find("type");
      auto o = ev.find("object");
      if (t != ev.end() && t->is_string()) type = &*t;
      if (o != ev.end() && o->is_object()) obj = &*o;
    }
    if (!type || !obj) {
      spdlog::warn("watch {}: skipping malformed event: {}", spec_.kind, Preview(line));
      return true;
    }
    const std::string& t = type->get_ref<const std::string&>();
    if (t == "ERROR") {
      auto code = obj->find("code");
      if (code != obj->end() && code->is_number_integer() && code->get<int64_t>() == 410) {
        end = WatchEnd::kGone;
        return false;
      }
      // The Status's message, else a preview of the raw line: never dump()
      // the object, which recurses per nesting level and a hostile or broken
      // server could nest it deep enough to overflow the stack.
      auto msg = obj->find("message");
      std::string text = msg != obj->end() && msg->is_string() ? msg->get<std::string>() : Preview(line);
      stream_error =
          absl::UnavailableError(absl::StrCat("watch ", spec_.kind, ": server sent an error: ", text));
      return false;
    }
    std::string rv = ResourceVersionOf(*obj);
    if (t == "BOOKMARK") {
      if (!rv.empty()) rv_ = rv;
      *made_progress = true;
    } else if (t == "ADDED" || t == "MODIFIED" || t == "DELETED") {
      store_->Apply(t, *obj);
      if (!rv.empty()) rv_ = rv;
      *made_progress = true;
      std::lock_guard lock(mu_);
      ++state_.events;
    } else {
      spdlog::warn("watch {}: skipping event of unknown type \"{}\"", spec_.kind, t);
      return true;
    }
    std::lock_guard lock(mu_);
    state_.resource_version = rv_;
    return true;
  };

  auto res = Get(query, std::chrono::milliseconds(0), [&](std::string_view chunk) {
    buf.append(chunk);
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (!handle(std::string_view(buf).substr(start, nl - start))) return false;
    }
    buf.erase(0, start);
    if (buf.size() > opts_.max_event_bytes) {
      stream_error = absl::ResourceExhaustedError(
          absl::StrCat("watch ", spec_.kind, ": event larger than ", opts_.max_event_bytes, " bytes"));
      return false;
    }
    return true;
  });
  {
    std::lock_guard lock(mu_);
    state_.connected = false;
  }
  if (end) return *end;
  if (!stream_error.ok()) return stream_error;
  if (!res.ok()) {
    if (absl::IsCancelled(res.status())) return res.status();
    return absl::Status(res.status().code(),
                        absl::StrCat("watch ", spec_.kind, ": ", res.status().message()));
  }
  if (res->status == 410) return WatchEnd::kGone;
  if (res->status != 200) return HttpError("watch", *res);
  if (!buf.empty()) handle(buf);  // a last event without its newline
  return end.value_or(WatchEnd::kClean);
}

void Reflector::Run() {
  auto stopping = [this] {
    std::lock_guard lock(mu_);
    return stop_;
  };
  auto fail = [this](const absl::Status& st) {
    std::string msg = SanitizeUtf8(std::string(st.message()));
    // A warning for each new trouble; the same one again (an optional CRD
    // not installed, a server down for an hour) only at debug level.
    const bool repeated = failures_ > 0 && msg == last_error_;
    auto delay = NextBackoff();
    spdlog::log(repeated ? spdlog::level::debug : spdlog::level::warn, "{}: {}; retry in {}", server_, msg,
                Seconds(delay));
    last_error_ = std::move(msg);
    SetError(st, delay);
    SleepFor(delay);
  };
  while (!stopping()) {
    bool just_listed = false;
    if (rv_.empty()) {
      auto st = List();
      if (absl::IsCancelled(st)) break;
      if (!st.ok()) {
        fail(st);
        continue;
      }
      just_listed = true;
    }
    bool progress = false;
    auto started = Clock::now();
    auto end = Watch(&progress);
    bool short_lived = Clock::now() - started < std::chrono::seconds(1);
    if (!end.ok()) {
      if (absl::IsCancelled(end.status())) break;
      // A watch that delivered something was healthy; start the next
      // backoff from the bottom so a one-off drop reconnects quickly.
      if (progress || !short_lived) failures_ = 0;
      fail(end.status());
      continue;
    }
    if (*end == WatchEnd::kGone) {
      spdlog::info("watch {}: resourceVersion {} is gone (410), listing again", spec_.kind, rv_);
      rv_.clear();
      {
        std::lock_guard lock(mu_);
        ++state_.relists_after_gone;
      }
      // Relist at once, unless the version of a list we just made is
      // already gone: then the server is not making sense, and an immediate
      // relist would only spin.
      if (just_listed && !progress && short_lived) {
        fail(absl::UnavailableError(
            absl::StrCat("watch ", spec_.kind, ": 410 Gone for the resourceVersion of a fresh list")));
      }
      continue;
    }
    // Clean end (timeoutSeconds). Re-watch at once, unless watches keep
    // ending immediately with nothing in them (a misbehaving proxy).
    if (!progress && short_lived) {
      fail(absl::UnavailableError(absl::StrCat("watch ", spec_.kind, ": ended at once")));
    } else {
      failures_ = 0;
    }
  }
}

}  // namespace ringmesh::agent::k8s
