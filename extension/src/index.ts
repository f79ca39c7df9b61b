// adaptlab in JupyterLab: a "Domain adaptation" launcher section with a card per installed
// domain (a card writes the domain's template notebook through the server and opens it),
// each domain's tutorials beside its card (one per seed paper, copied from the package), the
// runs side panel, reports in main-area tabs, palette commands and settings.
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  IFrame,
  MainAreaWidget,
  Notification,
  showErrorMessage
} from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import {
  createNotebook,
  createTutorial,
  getDomains,
  getTutorials,
  IDomain,
  ITutorial,
  reportUrl
} from './api';
import { domainIcon } from './icons';
import { RunsPanel } from './runsPanel';

const PLUGIN_ID = '@adaptlab/jupyterlab:plugin';
const CATEGORY = 'Domain adaptation';

namespace CommandIDs {
  export const newNotebook = 'adaptlab:new-notebook';
  export const newTutorial = 'adaptlab:new-tutorial';
  export const showRuns = 'adaptlab:show-runs';
  export const refreshRuns = 'adaptlab:refresh-runs';
  export const openReport = 'adaptlab:open-report';
}

interface ISettings {
  notebookDirectory: string;
  parameters: Record<string, unknown>;
  refreshSeconds: number;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Domain launcher cards, the adaptation runs panel and attribution reports.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette, ISettingRegistry, IDefaultFileBrowser, ILayoutRestorer],
  activate: async (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    fileBrowser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;
    const settings: ISettings = { notebookDirectory: '', parameters: {}, refreshSeconds: 10 };
    const domains = new Map<string, IDomain>();
    const tutorials = new Map<string, ITutorial>();

    const panel = new RunsPanel({
      openReport: run => void commands.execute(CommandIDs.openReport, { run: run.path }),
      openNotebook: path => void commands.execute('docmanager:open', { path })
    });
    shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, panel.id);

    if (settingRegistry) {
      try {
        const loaded = await settingRegistry.load(PLUGIN_ID);
        const apply = () => {
          settings.notebookDirectory = loaded.get('notebookDirectory').composite as string;
          settings.parameters = loaded.get('parameters').composite as Record<string, unknown>;
          settings.refreshSeconds = loaded.get('refreshSeconds').composite as number;
          panel.refreshSeconds = settings.refreshSeconds;
        };
        apply();
        loaded.changed.connect(apply);
      } catch (error) {
        console.warn('adaptlab: settings could not be loaded, using defaults', error);
      }
    }

    // Where a new notebook goes: the folder the settings name, else the file browser's.
    const notebookFolder = (): string =>
      settings.notebookDirectory.trim() || fileBrowser?.model.path || '';

    commands.addCommand(CommandIDs.newNotebook, {
      label: args => {
        const domain = domains.get(args.domain as string);
        const title = domain?.title ?? (args.domain as string);
        return args.isPalette || args.isMenu ? `New ${title} notebook` : title;
      },
      caption: args => domains.get(args.domain as string)?.description ?? '',
      icon: args => {
        const domain = domains.get(args.domain as string);
        return domainIcon(args.domain as string, domain?.icon ?? '');
      },
      execute: async args => {
        const name = args.domain as string;
        try {
          const created = await createNotebook({
            domain: name,
            path: PathExt.join(notebookFolder(), `${name}.ipynb`),
            unique: true,
            parameters: settings.parameters
          });
          return await commands.execute('docmanager:open', {
            path: created.path,
            factory: 'Notebook'
          });
        } catch (error) {
          await showErrorMessage(`Could not create the ${name} notebook`, error as Error);
        }
      }
    });

    commands.addCommand(CommandIDs.newTutorial, {
      label: args => {
        const tutorial = tutorials.get(args.tutorial as string);
        const paper = tutorial?.paper ?? (args.tutorial as string);
        return args.isPalette ? `New ${paper} tutorial notebook` : `${paper} tutorial`;
      },
      caption: args => tutorials.get(args.tutorial as string)?.title ?? '',
      icon: args => {
        const tutorial = tutorials.get(args.tutorial as string);
        const domain = tutorial ? domains.get(tutorial.domain) : undefined;
        return domainIcon(tutorial?.domain ?? '', domain?.icon ?? '');
      },
      execute: async args => {
        const name = args.tutorial as string;
        try {
          const created = await createTutorial({
            tutorial: name,
            path: PathExt.join(notebookFolder(), `${name}.ipynb`),
            unique: true
          });
          return await commands.execute('docmanager:open', {
            path: created.path,
            factory: 'Notebook'
          });
        } catch (error) {
          await showErrorMessage(`Could not create the ${name} tutorial`, error as Error);
        }
      }
    });

    commands.addCommand(CommandIDs.showRuns, {
      label: 'Show Adaptation Runs',
      execute: () => shell.activateById(panel.id)
    });

    commands.addCommand(CommandIDs.refreshRuns, {
      label: 'Refresh Adaptation Runs',
      execute: () => panel.refresh()
    });

    commands.addCommand(CommandIDs.openReport, {
      label: args => `Open Report of ${args.run as string}`,
      execute: args => {
        const run = args.run as string;
        const id = `adaptlab-report:${run}`;
        for (const widget of shell.widgets('main')) {
          if (widget.id === id) {
            shell.activateById(id);
            return;
          }
        }
        // The report page carries no scripts and the server serves it sandboxed; the frame
        // is sandboxed as well.
        const frame = new IFrame({ sandbox: [], referrerPolicy: 'same-origin' });
        frame.url = reportUrl(run);
        frame.addClass('jp-adaptlab-Report');
        const widget = new MainAreaWidget({ content: frame });
        widget.id = id;
        widget.title.label = `Report: ${PathExt.basename(run)}`;
        widget.title.caption = run;
        widget.title.closable = true;
        shell.add(widget, 'main');
        shell.activateById(id);
      }
    });

    if (palette) {
      palette.addItem({ command: CommandIDs.showRuns, category: CATEGORY });
      palette.addItem({ command: CommandIDs.refreshRuns, category: CATEGORY });
    }

    try {
      const reply = await getDomains();
      reply.domains.forEach((domain, rank) => {
        domains.set(domain.name, domain);
        launcher?.add({
          command: CommandIDs.newNotebook,
          args: { domain: domain.name },
          category: CATEGORY,
          rank
        });
        palette?.addItem({
          command: CommandIDs.newNotebook,
          args: { domain: domain.name, isPalette: true },
          category: CATEGORY
        });
      });
      // Each tutorial sits right after its domain's card (the launcher orders by rank).
      const ranks = new Map(reply.domains.map((domain, rank) => [domain.name, rank]));
      try {
        for (const tutorial of (await getTutorials()).tutorials) {
          const rank = ranks.get(tutorial.domain);
          if (rank === undefined) {
            continue; // its domain's plugin is not installed
          }
          tutorials.set(tutorial.name, tutorial);
          launcher?.add({
            command: CommandIDs.newTutorial,
            args: { tutorial: tutorial.name },
            category: CATEGORY,
            rank: rank + 0.5
          });
          palette?.addItem({
            command: CommandIDs.newTutorial,
            args: { tutorial: tutorial.name, isPalette: true },
            category: CATEGORY
          });
        }
      } catch (error) {
        console.warn('adaptlab: could not list the tutorials', error);
      }
      panel.pluginErrors = reply.errors;
      for (const error of reply.errors) {
        Notification.warning(`adaptlab: domain plugin ${error.plugin} failed to load: ${error.error}`, {
          autoClose: 8000
        });
      }
    } catch (error) {
      Notification.error(`adaptlab: could not list domains (${(error as Error).message})`);
    }
  }
};

export default plugin;

