"""Interface text in English and Chinese; each user picks a language, English by default.

Templates call `t("key")`, or `t_plural("key", count)` for text with a number in it (`PLURALS`:
the form the language's plural rule gives `count`, which fills `{count}`). A key missing
from a language falls back to English, and a key missing from English is a bug that the tests
catch (they render every page in both languages).
"""

from __future__ import annotations

from app.schemas import USERNAME_RULE

LANGUAGES = {"en": "English", "zh": "中文"}
DEFAULT_LANGUAGE = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "nav.rate": "Rate",
        "nav.home": "Home",
        "nav.guidelines": "Guidelines",
        "nav.playground": "Playground",
        "nav.account": "Account",
        "nav.admin": "Admin",
        "nav.sign_out": "Sign out",
        "home.title": "Your rating",
        "home.welcome": "Welcome, {name}",
        "home.judged": "Judged",
        "home.today": "Today",
        "home.skipped": "Skipped",
        "home.available": "Waiting for you",
        "home.start": "Start rating",
        "home.resume": "Resume your task",
        "home.guidelines": "Read the guidelines before you start; they say what a good answer is.",
        "rate.title": "Rate",
        "rate.prompt": "Prompt",
        "rate.system": "System",
        "rate.user": "User",
        "rate.assistant": "Assistant",
        "rate.response": "Response {label}",
        "rate.which_better": "Which response is better?",
        "rate.a_better": "A is better",
        "rate.b_better": "B is better",
        "rate.tie": "About the same",
        "rate.both_bad": "Both are bad",
        "rate.strength": "How much better?",
        "rate.slightly": "Slightly",
        "rate.clearly": "Clearly",
        "rate.much": "Much",
        "rate.rank_title": "Rank the responses, best first",
        "rate.unranked": "not ranked",
        "rate.none_acceptable": "None of them is acceptable",
        "rate.ratings": "Ratings (1 = poor, 7 = excellent)",
        "rate.flags": "Flags",
        "rate.flag.unsafe": "Unsafe",
        "rate.flag.factually_wrong": "Factually wrong",
        "rate.flag.off_topic": "Off-topic",
        "rate.flag.broken": "Broken output",
        "rate.critique": "Critique (optional)",
        "rate.critique_placeholder": "What is wrong or missing in the answers?",
        "rate.rewrite": "Write a better answer (optional)",
        "rate.rewrite_hint": "Starts from the response you preferred; edit it into the answer "
        "you would want. Left unchanged, it is not saved.",
        "rate.submit": "Submit",
        "rate.skip": "Skip",
        "rate.skip_reason": "Why skip? (optional)",
        "rate.skip_confirm": "Skip this task",
        "rate.cancel": "Cancel",
        "rate.empty_title": "Nothing to rate right now",
        "rate.empty_body": "There are no tasks waiting for you. New ones appear while an admin "
        "generates candidates; this page shows the next one as soon as it is there.",
        "rate.paused_title": "Your rating is paused",
        "rate.paused_body": "An admin has paused your rating, so no new tasks come to you until "
        "they resume it. The judgements you made are kept.",
        "rate.paused_reason": "Reason: {reason}",
        "rate.keys": "Keys",
        "rate.guideline_version": "Guidelines v{version}",
        "rate.error.choose": "Choose which response is better, a tie, or both bad.",
        "rate.error.rank_all": "Give every response a rank.",
        # the rater's page, issue 19: vote bar, progress, notices, local times, touch hints
        "rate.saved": "Saved.",
        "rate.saved_next": "Saved. Here is the next task.",
        "rate.skipped": "Skipped.",
        "rate.skipped_next": "Skipped. Here is the next task.",
        "rate.reserved_until": "Reserved for you until",
        "rate.vote_bar": "Your verdict",
        "rate.rank_of": "Rank of response {label}",
        "rate.keys_hint_pair": "Keys: A or B (← →) picks the better one, T about the same, "
        "X both bad; 1 2 3 how much better; Enter submits; ? lists every key.",
        "rate.keys_hint_rank": "Keys: press the letters from best to worst; = before a letter "
        "ties it with the previous one; Enter submits. Or drag the chips, or choose the ranks.",
        "rate.touch_hint_pair": "Tap the better response (or about the same, or both bad), "
        "then how much better, then Submit.",
        "rate.touch_hint_rank": "Tap the chips from best to worst, or choose a rank for each "
        "response, then Submit.",
        "rate.progress": "Your progress",
        "rate.progress_today": "Today",
        "rate.progress_judged": "Done overall",
        "rate.progress_left": "Left in the queue",
        "rate.progress_agreement": "Agreement with other raters",
        "rate.progress_agreement_hint": "How closely your rankings follow the other raters' "
        "consensus on the same tasks (updated every few minutes)",
        "playground.title": "Playground",
        "playground.model": "Model",
        "playground.current": "(current)",
        "playground.compare": "Compare with",
        "playground.nothing": "nothing",
        "playground.temperature": "Temperature",
        "playground.max_tokens": "Max tokens",
        "playground.new_chat": "New chat",
        "playground.message": "Your message (Ctrl+Enter sends)",
        "playground.send": "Send",
        "playground.cancel": "Cancel",
        "playground.none_ready": "No model version is ready yet; the base model is still being "
        "imported.",
        "playground.good": "Good answer",
        "playground.bad": "Bad answer",
        "playground.suggest": "Suggest a better answer",
        "playground.better_hint": "Edit the answer into the one you would want:",
        "playground.rated": "Thanks, noted.",
        "playground.suggested": "Thanks: your answer goes to the raters next to this one.",
        "playground.unchanged": "Change the answer first: an unchanged copy says nothing new.",
        "playground.failed": "Feedback failed; try again.",
        "help.title": "Keyboard shortcuts",
        "help.better": "A / B (or ← / →): that response is better",
        "help.tie": "T: about the same · X: both bad",
        "help.strength": "1 2 3: slightly / clearly / much better",
        "help.rank": "A B C D: rank best to worst · = then a letter: tie · Backspace: undo · "
        "0: clear",
        "help.ratings": "R: go to the ratings; then 1–7 rates, Tab moves on",
        "help.flags": "F: go to the flags (Space toggles)",
        "help.critique": "N: write a critique (a note)",
        "help.rewrite": "W: write a better answer",
        "help.skip": "S: skip (Enter confirms)",
        "help.submit": "Enter (or Ctrl+Enter in a text box): submit",
        "help.escape": "Esc: leave a text box or close this help",
        "help.help": "?: show or hide this help",
        "guidelines.title": "Rating guidelines",
        "guidelines.none": "No guidelines have been published yet.",
        "guidelines.version": "Version {version}, published {date}",
        "account.title": "Account",
        "account.language": "Language",
        "account.save": "Save",
        "account.username_rule": USERNAME_RULE,
        "account.unlock": "Unlock",
        "account.locked_until": "locked until {time}",
        "error.back": "Back to the start page",
        "error.back_to_page": "Back to the page you were on",
        # --- the admin console ---
        "admin.nav.dashboard": "Dashboard",
        "admin.nav.data": "Data",
        "admin.nav.quality": "Quality",
        "admin.nav.rounds": "Rounds",
        "admin.nav.models": "Models",
        "admin.nav.users": "Users",
        "admin.nav.guidelines": "Guidelines",
        "admin.nav.api_docs": "API docs",
        "admin.job.generate_candidates": "Generate candidates",
        "admin.job.train_reward_model": "Train a reward model",
        "admin.job.train_sft": "Fine-tune on rewrites (SFT)",
        "admin.jobs.job": "Job",
        "admin.jobs.duration": "Duration",
        "admin.chart.day": "Day",
        "admin.chart.step": "Step",
        "admin.chart.judgements_per_day": "Judgements per day",
        "admin.chart.raters_per_day": "Raters per day",
        "admin.chart.no_script": "This chart needs JavaScript.",
        # --- end of the admin console ---
    },
    "zh": {
        "nav.rate": "评分",
        "nav.home": "首页",
        "nav.guidelines": "评分准则",
        "nav.playground": "试用",
        "nav.account": "账户",
        "nav.admin": "管理",
        "nav.sign_out": "退出登录",
        "home.title": "我的评分",
        "home.welcome": "欢迎，{name}",
        "home.judged": "已评",
        "home.today": "今日",
        "home.skipped": "已跳过",
        "home.available": "待评任务",
        "home.start": "开始评分",
        "home.resume": "继续当前任务",
        "home.guidelines": "开始之前请先阅读评分准则，它说明了什么是好的回答。",
        "rate.title": "评分",
        "rate.prompt": "提示",
        "rate.system": "系统",
        "rate.user": "用户",
        "rate.assistant": "助手",
        "rate.response": "回答 {label}",
        "rate.which_better": "哪个回答更好？",
        "rate.a_better": "A 更好",
        "rate.b_better": "B 更好",
        "rate.tie": "差不多",
        "rate.both_bad": "都不好",
        "rate.strength": "好多少？",
        "rate.slightly": "稍好",
        "rate.clearly": "明显更好",
        "rate.much": "好很多",
        "rate.rank_title": "给回答排序，最好的在前",
        "rate.unranked": "未排序",
        "rate.none_acceptable": "都不可接受",
        "rate.ratings": "评分（1 = 很差，7 = 极好）",
        "rate.flags": "标记",
        "rate.flag.unsafe": "不安全",
        "rate.flag.factually_wrong": "事实错误",
        "rate.flag.off_topic": "答非所问",
        "rate.flag.broken": "输出损坏",
        "rate.critique": "评语（可选）",
        "rate.critique_placeholder": "这些回答有什么错误或遗漏？",
        "rate.rewrite": "写一个更好的回答（可选）",
        "rate.rewrite_hint": "从你偏好的回答开始，把它改成你想要的回答。不做修改则不会保存。",
        "rate.submit": "提交",
        "rate.skip": "跳过",
        "rate.skip_reason": "跳过的原因（可选）",
        "rate.skip_confirm": "跳过此任务",
        "rate.cancel": "取消",
        "rate.empty_title": "暂时没有可评的任务",
        "rate.empty_body": "目前没有等待你的任务。管理员生成候选回答时会陆续出现新任务，"
        "本页会自动显示下一个任务。",
        "rate.paused_title": "你的评分已暂停",
        "rate.paused_body": "管理员暂停了你的评分，在恢复之前不会再分配新任务给你。"
        "你已做的评判会保留。",
        "rate.paused_reason": "原因：{reason}",
        "rate.keys": "快捷键",
        "rate.guideline_version": "准则 v{version}",
        "rate.error.choose": "请选择哪个回答更好、差不多或都不好。",
        "rate.error.rank_all": "请给每个回答一个名次。",
        # the rater's page, issue 19: vote bar, progress, notices, local times, touch hints
        "rate.saved": "已保存。",
        "rate.saved_next": "已保存。下面是下一个任务。",
        "rate.skipped": "已跳过。",
        "rate.skipped_next": "已跳过。下面是下一个任务。",
        "rate.reserved_until": "为你保留至",
        "rate.vote_bar": "你的评判",
        "rate.rank_of": "回答 {label} 的名次",
        "rate.keys_hint_pair": "快捷键：A 或 B（← →）选更好的回答，T 差不多，X 都不好；"
        "1 2 3 表示好多少；回车提交；? 显示全部快捷键。",
        "rate.keys_hint_rank": "快捷键：按从好到差的顺序按字母键；先按 = 再按字母表示与上一个并列；"
        "回车提交。也可以拖动标签，或选择名次。",
        "rate.touch_hint_pair": "点选更好的回答（或差不多、都不好），再选好多少，然后提交。",
        "rate.touch_hint_rank": "按从好到差的顺序点击标签，或为每个回答选择名次，然后提交。",
        "rate.progress": "你的进度",
        "rate.progress_today": "今日",
        "rate.progress_judged": "累计完成",
        "rate.progress_left": "队列剩余",
        "rate.progress_agreement": "与其他评分员的一致度",
        "rate.progress_agreement_hint": "你的排序与其他评分员对同一任务的共识有多接近"
        "（每隔几分钟更新）",
        "playground.title": "试用",
        "playground.model": "模型",
        "playground.current": "（当前）",
        "playground.compare": "对比",
        "playground.nothing": "不对比",
        "playground.temperature": "温度",
        "playground.max_tokens": "最大词元数",
        "playground.new_chat": "新对话",
        "playground.message": "你的消息（Ctrl+回车发送）",
        "playground.send": "发送",
        "playground.cancel": "取消",
        "playground.none_ready": "还没有可用的模型版本；基础模型仍在导入中。",
        "playground.good": "好回答",
        "playground.bad": "差回答",
        "playground.suggest": "提供更好的回答",
        "playground.better_hint": "把这个回答改成你想要的样子：",
        "playground.rated": "谢谢，已记录。",
        "playground.suggested": "谢谢：你的回答会和这个回答一起交给评分员比较。",
        "playground.unchanged": "请先修改回答：原样的副本没有新信息。",
        "playground.failed": "反馈失败，请重试。",
        "help.title": "键盘快捷键",
        "help.better": "A / B（或 ← / →）：该回答更好",
        "help.tie": "T：差不多 · X：都不好",
        "help.strength": "1 2 3：稍好 / 明显更好 / 好很多",
        "help.rank": "A B C D：从好到差排序 · = 再按字母：并列 · Backspace：撤销 · 0：清空",
        "help.ratings": "R：跳到评分；然后按 1–7 打分，Tab 移到下一项",
        "help.flags": "F：跳到标记（空格切换）",
        "help.critique": "N：写评语",
        "help.rewrite": "W：写一个更好的回答",
        "help.skip": "S：跳过（回车确认）",
        "help.submit": "回车（在文本框中用 Ctrl+回车）：提交",
        "help.escape": "Esc：离开文本框或关闭帮助",
        "help.help": "?：显示或隐藏帮助",
        "guidelines.title": "评分准则",
        "guidelines.none": "尚未发布评分准则。",
        "guidelines.version": "第 {version} 版，发布于 {date}",
        "account.title": "账户",
        "account.language": "语言",
        "account.save": "保存",
        "account.username_rule": "用户名为 3 到 64 个字符：字母（a 到 z）、数字、点、短横线"
        "或下划线，以字母或数字开头。",
        "account.unlock": "解锁",
        "account.locked_until": "锁定至 {time}",
        "error.back": "返回首页",
        "error.back_to_page": "返回上一页",
        # --- the admin console ---
        "admin.nav.dashboard": "概览",
        "admin.nav.data": "数据",
        "admin.nav.quality": "质量",
        "admin.nav.rounds": "训练轮次",
        "admin.nav.models": "模型",
        "admin.nav.users": "用户",
        "admin.nav.guidelines": "评分准则",
        "admin.nav.api_docs": "API 文档",
        "admin.job.generate_candidates": "生成候选回答",
        "admin.job.train_reward_model": "训练奖励模型",
        "admin.job.train_sft": "用改写微调（SFT）",
        "admin.jobs.job": "任务",
        "admin.jobs.duration": "耗时",
        "admin.chart.day": "日期",
        "admin.chart.step": "步数",
        "admin.chart.judgements_per_day": "每日评判数",
        "admin.chart.raters_per_day": "每日评分员数",
        "admin.chart.no_script": "此图表需要 JavaScript。",
        # --- end of the admin console ---
    },
}


PLURALS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        # --- the admin console ---
        "admin.count.prompts": {"one": "{count} prompt", "other": "{count} prompts"},
        "admin.count.tasks": {"one": "{count} task", "other": "{count} tasks"},
        "admin.count.judgements": {"one": "{count} judgement", "other": "{count} judgements"},
        "admin.count.raters": {"one": "{count} rater", "other": "{count} raters"},
        "admin.count.pairs": {"one": "{count} pair", "other": "{count} pairs"},
        "admin.count.judged_pairs": {"one": "{count} judged pair", "other": "{count} judged pairs"},
        "admin.count.more_rows_skipped": {
            "one": "… and {count} more row skipped.",
            "other": "… and {count} more rows skipped.",
        },
        "admin.count.escalated": {
            "one": "{count} task got extra raters because the first ones disagreed.",
            "other": "{count} tasks got extra raters because the first ones disagreed.",
        },
        # --- end of the admin console ---
    },
    "zh": {
        # --- the admin console ---
        "admin.count.prompts": {"other": "{count} 条提示"},
        "admin.count.tasks": {"other": "{count} 个任务"},
        "admin.count.judgements": {"other": "{count} 条评判"},
        "admin.count.raters": {"other": "{count} 位评分员"},
        "admin.count.pairs": {"other": "{count} 对"},
        "admin.count.judged_pairs": {"other": "{count} 对已评判的回答"},
        "admin.count.more_rows_skipped": {"other": "……另有 {count} 行被跳过。"},
        "admin.count.escalated": {"other": "{count} 个任务因最初的评分员意见不一而增加了评分员。"},
        # --- end of the admin console ---
    },
}
"""Text with a number in it, by plural form (`one`, `other`: CLDR's categories) in each language."""


def translate(language: str, key: str, **values: object) -> str:
    """The text for `key` in `language` (English when missing), with `{name}` fields filled."""
    text = MESSAGES.get(language, {}).get(key) or MESSAGES[DEFAULT_LANGUAGE][key]
    return text.format(**values) if values else text


def plural_form(language: str, count: int) -> str:
    """The CLDR plural category of `count`: English says "1 prompt" but "0 prompts" and
    "2 prompts"; Chinese has no plural forms, so always `other`."""
    return "one" if language == "en" and count == 1 else "other"


def translate_plural(language: str, key: str, count: int, **values: object) -> str:
    """The form of `key` that `count` takes in `language`, with `{count}` and the other fields
    filled; English (forms and all) when the language lacks the key."""
    if key not in PLURALS.get(language, {}):
        language = DEFAULT_LANGUAGE
    text = PLURALS[language][key][plural_form(language, count)]
    return text.format(count=count, **values)
