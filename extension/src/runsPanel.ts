// The left side panel: every run under the server root, newest first, with its status,
// target metric against the unadapted baseline, trainable share and training memory, and
// buttons to open its report in a tab and its notebook.
import { Widget } from '@lumino/widgets';
import { Message } from '@lumino/messaging';

import { getRuns, IPluginError, IRun } from './api';
import { runsIcon } from './icons';

export interface IRunsPanelActions {
  openReport(run: IRun): void;
  openNotebook(path: string): void;
}

function fmt(value: number | null | undefined, digits: number): string {
  return value === null || value === undefined ? '–' : value.toFixed(digits);
}

function mib(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '–' : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class RunsPanel extends Widget {
  constructor(actions: IRunsPanelActions) {
    super();
    this._actions = actions;
    this.id = 'adaptlab-runs';
    this.addClass('jp-adaptlab-RunsPanel');
    this.title.icon = runsIcon;
    this.title.caption = 'Adaptation runs';

    const header = element('div', 'jp-adaptlab-RunsPanel-header');
    header.appendChild(element('h2', 'jp-adaptlab-RunsPanel-title', 'Adaptation runs'));
    const refresh = element('button', 'jp-mod-styled jp-adaptlab-RunsPanel-refresh', 'Refresh');
    refresh.title = 'List the runs under the server root again';
    refresh.onclick = () => void this.refresh();
    header.appendChild(refresh);
    this._status = element('div', 'jp-adaptlab-RunsPanel-status');
    this._list = element('ul', 'jp-adaptlab-RunsPanel-list');
    this._errors = element('div', 'jp-adaptlab-RunsPanel-errors');
    this.node.append(header, this._status, this._list, this._errors);
  }

  get runs(): IRun[] {
    return this._runs;
  }

  set refreshSeconds(seconds: number) {
    this._refreshMs = Math.max(2, seconds) * 1000;
    this._schedule();
  }

  set pluginErrors(errors: IPluginError[]) {
    this._errors.replaceChildren();
    if (errors.length) {
      this._errors.appendChild(element('h3', '', 'Domain plugins that failed to load'));
      for (const error of errors) {
        this._errors.appendChild(element('p', '', `${error.plugin}: ${error.error}`));
      }
    }
  }

  async refresh(): Promise<void> {
    this._status.textContent = 'Loading…';
    try {
      const reply = await getRuns();
      this._runs = reply.runs;
      this._render(reply.runs);
      const count = `${reply.runs.length} run${reply.runs.length === 1 ? '' : 's'}`;
      this._status.textContent = reply.truncated ? `${count} (more not listed)` : count;
    } catch (error) {
      this._status.textContent = `Could not list runs: ${(error as Error).message}`;
    }
  }

  protected onAfterShow(msg: Message): void {
    void this.refresh();
    this._schedule();
  }

  protected onAfterHide(msg: Message): void {
    this._schedule();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  // Poll only while the panel is visible: a hidden panel costs the server nothing.
  private _schedule(): void {
    window.clearInterval(this._timer);
    this._timer = undefined;
    if (this.isVisible) {
      this._timer = window.setInterval(() => void this.refresh(), this._refreshMs);
    }
  }

  private _render(runs: IRun[]): void {
    this._list.replaceChildren();
    if (!runs.length) {
      this._list.appendChild(
        element(
          'li',
          'jp-adaptlab-RunsPanel-empty',
          'No runs under the server root yet. Open a card of the "Domain adaptation" ' +
            'section of the launcher and run its notebook.'
        )
      );
      return;
    }
    for (const run of runs) {
      this._list.appendChild(this._row(run));
    }
  }

  private _row(run: IRun): HTMLLIElement {
    const row = element('li', 'jp-adaptlab-Run');
    row.dataset.path = run.path;
    const status = run.active ? 'running' : run.status;
    const top = element('div', 'jp-adaptlab-Run-top');
    const name = element('span', 'jp-adaptlab-Run-name', run.name);
    name.title = run.path;
    top.append(name, element('span', `jp-adaptlab-Run-status jp-mod-${status}`, status));
    row.appendChild(top);
    if (run.error) {
      row.appendChild(element('div', 'jp-adaptlab-Run-detail', run.error));
      return row;
    }
    row.appendChild(element('div', 'jp-adaptlab-Run-detail', `${run.domain} · ${run.strategy}`));
    // A run records every option of its strategy, defaults included: a dozen or more. One
    // line, cut with an ellipsis, keeps the list of runs scannable; hovering shows them all.
    const options = Object.entries(run.strategy_options || {}).map(
      ([key, value]) => `${key}=${value}`
    );
    if (options.length) {
      const line = element('div', 'jp-adaptlab-Run-options', options.join(', '));
      line.title = options.join('\n');
      row.appendChild(line);
    }
    if (run.metric !== null && run.metric !== undefined) {
      const baseline =
        run.baseline_metric !== null && run.baseline_metric !== undefined
          ? ` (unadapted ${fmt(run.baseline_metric, 3)})`
          : '';
      row.appendChild(
        element('div', 'jp-adaptlab-Run-metric', `${run.monitor} ${fmt(run.metric, 3)}${baseline}`)
      );
    }
    row.appendChild(
      element(
        'div',
        'jp-adaptlab-Run-cost',
        `trainable ${fmt(run.trainable_percent, 2)}% · ${mib(run.training_memory)}`
      )
    );
    const buttons = element('div', 'jp-adaptlab-Run-buttons');
    const report = element('button', 'jp-mod-styled jp-adaptlab-Run-report', 'Report');
    report.disabled = !run.report;
    report.title = run.report ? 'Open the attribution report in a tab' : 'Not explained yet';
    report.onclick = () => this._actions.openReport(run);
    const notebook = element('button', 'jp-mod-styled jp-adaptlab-Run-notebook', 'Notebook');
    notebook.disabled = !run.notebook;
    notebook.title = run.notebook
      ? `Open ${run.notebook}`
      : 'Started outside a notebook under this root';
    notebook.onclick = () => run.notebook && this._actions.openNotebook(run.notebook);
    buttons.append(report, notebook);
    row.appendChild(buttons);
    return row;
  }

  private _actions: IRunsPanelActions;
  private _status: HTMLDivElement;
  private _list: HTMLUListElement;
  private _errors: HTMLDivElement;
  private _runs: IRun[] = [];
  private _refreshMs = 10000;
  private _timer: number | undefined = undefined;
}
