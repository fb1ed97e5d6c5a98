// The UI's words in English and Japanese: the browser's language by
// default, switchable, remembered on this device.

const WORDS = {
  en: {
    guide: 'Guide',
    now: 'Now',
    next: 'Next',
    offAir: 'Off air',
    viewers: (n) => `${n} watching`,
    comments: 'Comments',
    post: 'Post',
    commentLabel: 'Your comment',
    commentPlaceholder: 'Say something…',
    published: 'Posted',
    held: (reason) => `Waiting for a moderator${reason ? `: ${reason}` : ''}`,
    refused: (reason) => `Not posted: ${reason}`,
    retryIn: (seconds) => `You can post again in ${seconds} s`,
    share: 'Share',
    copyLink: 'Copy link',
    copied: 'Copied',
    overlay: 'Comments on the video',
    offAirMessage: 'This channel is off air right now. It will start by itself.',
    networkMessage: 'The connection dropped. Trying again…',
    chooseChannel: 'Choose a channel from the guide.',
    language: 'Language',
    name: 'Your name',
    rename: 'Save',
    fullscreen: 'Full screen',
    pip: 'Picture in picture',
    quality: 'Quality',
    auto: 'Auto',
    report: 'Report',
    reported: 'Reported',
    position: 'Position',
    naka: 'Flowing',
    ue: 'Top',
    shita: 'Bottom',
    size: 'Size',
    medium: 'Medium',
    big: 'Big',
    small: 'Small',
    colour: 'Colour',
    muting: 'Muting',
    mutedWords: 'Hide comments with these words (comma-separated)',
    mutedUsers: 'Muted viewers',
    unmute: 'Unmute everyone',
    mute: 'Mute',
    timetable: "Today's timetable",
    replay: 'Replay',
    watchLive: 'Watch live',
    comingUp: 'Coming up',
    replaying: 'Replay',
  },
  ja: {
    guide: '番組表',
    now: '放送中',
    next: '次',
    offAir: '放送休止',
    viewers: (n) => `${n}人が視聴中`,
    comments: 'コメント',
    post: '投稿',
    commentLabel: 'コメント',
    commentPlaceholder: 'コメントする…',
    published: '投稿しました',
    held: (reason) => `確認中です${reason ? `：${reason}` : ''}`,
    refused: (reason) => `投稿できませんでした：${reason}`,
    retryIn: (seconds) => `${seconds}秒後に投稿できます`,
    share: 'シェア',
    copyLink: 'リンクをコピー',
    copied: 'コピーしました',
    overlay: '動画上のコメント',
    offAirMessage: 'このチャンネルは現在放送休止中です。始まると自動で再生します。',
    networkMessage: '接続が切れました。再接続しています…',
    chooseChannel: '番組表からチャンネルを選んでください。',
    language: '言語',
    name: '名前',
    rename: '保存',
    fullscreen: '全画面',
    pip: 'ピクチャーインピクチャー',
    quality: '画質',
    auto: '自動',
    report: '通報',
    reported: '通報しました',
    position: '位置',
    naka: '流れる',
    ue: '上',
    shita: '下',
    size: '大きさ',
    medium: '中',
    big: '大',
    small: '小',
    colour: '色',
    muting: 'ミュート',
    mutedWords: 'この言葉を含むコメントを隠す（カンマ区切り）',
    mutedUsers: 'ミュートした視聴者',
    unmute: 'すべて解除',
    mute: 'ミュート',
    timetable: '今日の番組表',
    replay: 'もう一度見る',
    watchLive: 'ライブで見る',
    comingUp: 'これから',
    replaying: '見逃し配信',
  },
};

const LANGUAGE_KEY = 'onair.language';

export function language() {
  const chosen = window.localStorage.getItem(LANGUAGE_KEY);
  if (chosen && WORDS[chosen]) return chosen;
  return (navigator.language || 'en').toLowerCase().startsWith('ja') ? 'ja' : 'en';
}

export function setLanguage(code) {
  if (WORDS[code]) window.localStorage.setItem(LANGUAGE_KEY, code);
}

/** The word for `key` in the current language (a function for phrases). */
export function t(key, ...args) {
  const word = WORDS[language()][key] ?? WORDS.en[key] ?? key;
  return typeof word === 'function' ? word(...args) : word;
}
