// The public REST API, as the viewer app and the console call it: JSON in
// and out, the caller's bearer token, and errors as `ApiError`s carrying the
// service's message (which is written for people) and when to retry.

export class ApiError extends Error {
  constructor(status, message, retryAfterSeconds) {
    super(message);
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** Calls `method path` with `body` as JSON and `token` as the bearer. */
export async function call(method, path, { body, token } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, 'the station does not answer', undefined);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const retry = Number(response.headers.get('retry-after'));
    throw new ApiError(
      response.status,
      (json && json.message) || `${response.status} ${response.statusText}`,
      Number.isFinite(retry) && retry > 0 ? retry : undefined,
    );
  }
  return json;
}

const ACCOUNT_KEY = 'onair.account';

/**
 * The viewer's account: an anonymous one made on the first visit and kept
 * in local storage; its access token is renewed with the refresh token
 * when the station says it expired.
 */
export class Account {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    try {
      this.saved = JSON.parse(storage.getItem(ACCOUNT_KEY) || 'null');
    } catch {
      this.saved = null;
    }
  }

  get user() {
    return this.saved && this.saved.user;
  }

  get token() {
    return this.saved && this.saved.accessToken;
  }

  save() {
    this.storage.setItem(ACCOUNT_KEY, JSON.stringify(this.saved));
  }

  /** Makes the anonymous account if there is none yet. */
  async ensure() {
    if (this.saved && this.saved.accessToken) return;
    const created = await call('POST', '/v1/users', { body: {} });
    this.saved = {
      user: created.user,
      accessToken: created.accessToken,
      refreshToken: created.refreshToken,
    };
    this.save();
  }

  /** Calls the API as this viewer, renewing the token once if it expired. */
  async call(method, path, body) {
    await this.ensure();
    try {
      return await call(method, path, { body, token: this.token });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      await this.renew();
      return call(method, path, { body, token: this.token });
    }
  }

  async renew() {
    try {
      const renewed = await call('POST', '/v1/tokens:refresh', {
        body: { refreshToken: this.saved.refreshToken },
      });
      this.saved.accessToken = renewed.accessToken;
      if (renewed.refreshToken) this.saved.refreshToken = renewed.refreshToken;
      this.save();
    } catch (error) {
      // The refresh token is gone too (revoked, expired): start afresh.
      this.saved = null;
      await this.ensure();
    }
  }

  async rename(displayName) {
    const user = await this.call('PATCH', '/v1/users/me', { displayName });
    this.saved.user = user;
    this.save();
    return user;
  }
}
